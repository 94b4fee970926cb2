package memcachedcli

import (
	"fmt"
	"strconv"
	"strings"
)

// Mode says how substrate runs the cache an Options value configures.
type Mode int

const (
	// Standalone is `substrate memcached`: the process is the cache, as
	// memcached's is, so process-wide options (-k, -r, -t, -A, -P, -u)
	// apply to it.
	Standalone Mode = iota
	// Serve is `substrate serve`: the cache is one service of a process
	// that also runs etcd and the AMQP broker, so options that would act
	// on the whole process are refused (or, for -u and -t, reported as not
	// applied: see Check).
	Serve
)

// UnsupportedError is an option memcached 1.6.18 accepts that substrate
// refuses rather than ignore. Its text is one line.
type UnsupportedError struct {
	Option string // as the user would recognise it: "-F", "-o ext_path=/x:1G"
	Why    string
}

func (e *UnsupportedError) Error() string {
	return "substrate does not support memcached's " + e.Option + ": " + e.Why
}

func unsupported(opt, why string) error { return &UnsupportedError{Option: opt, Why: why} }

// Check applies substrate's rule that every option memcached 1.6.18
// accepts is honoured or refused, never ignored. It returns the first
// option substrate refuses in mode m (an *UnsupportedError), and, under
// Serve, one line for each option that describes the process rather than
// the cache and that serve documents as not applied (-u: substrate runs
// as its own user; -t: the cache's connections run on the process's
// threads). Options given at memcached's default value are always
// accepted: they ask for what substrate does. The per-option status is
// listed in the cache package's documentation.
func (o Options) Check(m Mode) (notApplied []string, err error) {
	d := Default()
	switch {
	case o.Daemonize:
		return nil, unsupported("-d (--daemon)", "it does not fork into the background; run it under systemd (Debian's and RDO's units do not pass -d) or a supervisor")
	case o.LargePages:
		return nil, unsupported("-L (--enable-largepages)", "the Go runtime manages the process's memory pages")
	case o.DetailEnabled || o.PrefixDelimiter != d.PrefixDelimiter:
		return nil, unsupported("-D", "it keeps no per-prefix statistics (stats detail)")
	case o.Factor != d.Factor:
		return nil, unsupported("-f "+strconv.FormatFloat(o.Factor, 'g', -1, 64), "it has no slab classes (items take their own size); only the default 1.25 is accepted")
	case o.ChunkSize != d.ChunkSize:
		return nil, unsupported("-n "+strconv.Itoa(o.ChunkSize), "it has no slab classes (items take their own size); only the default 48 is accepted")
	case o.ReqsPerEvent != d.ReqsPerEvent:
		return nil, unsupported("-R "+strconv.Itoa(o.ReqsPerEvent), "each connection is served by its own goroutine, scheduled by Go; only the default 20 is accepted")
	case o.AuthFile != "":
		return nil, unsupported("-Y (--auth-file)", "it has no ASCII authentication; use -S (SASL)")
	case o.MemoryFile != "":
		return nil, unsupported("-e (--memory-file)", "it has no restartable cache file")
	case o.NAPIIDs != 0:
		return nil, unsupported("-N (--napi-ids)", "it does not steer connections by NAPI ID")
	}
	for _, item := range o.Ext.Raw {
		if err := checkExtended(item, o.Ext); err != nil {
			return nil, err
		}
	}
	if m != Serve {
		return nil, nil
	}
	switch {
	case o.Shutdown:
		return nil, unsupported("-A (--enable-shutdown) under substrate serve", "the shutdown command would stop etcd and the AMQP broker too; use it with substrate memcached")
	case o.PidFile != "":
		return nil, unsupported("-P (--pidfile) under substrate serve", "the process is substrate's, not the cache's; use systemd's MAINPID or substrate memcached")
	case o.LockMemory:
		return nil, unsupported("-k (--lock-memory) under substrate serve", "it would lock etcd's and the broker's memory too; use it with substrate memcached")
	case o.Coredumps:
		return nil, unsupported("-r (--enable-coredumps) under substrate serve", "it would change the whole process's core limit; use it with substrate memcached")
	}
	if o.User != "" {
		notApplied = append(notApplied, fmt.Sprintf("memcached's -u %s is not applied under substrate serve: the cache runs as the user substrate runs as", o.User))
	}
	if o.ThreadsSet {
		notApplied = append(notApplied, fmt.Sprintf("memcached's -t %d is not applied under substrate serve: the cache's connections run on the process's threads (GOMAXPROCS); stats settings num_threads shows that number", o.Threads))
	}
	return notApplied, nil
}

// extDefaults are the -o suboptions accepted only when they leave
// memcached's default in place (compared after parsing, so "0.80" and
// "0.8" are the same ratio).
var extDefaults = map[string]struct {
	isDefault func(e, d Extended) bool
	def       string
	why       string
}{
	"slab_automove":        {func(e, d Extended) bool { return e.SlabAutomove == d.SlabAutomove }, "1", "it has no slab pages to move"},
	"slab_automove_ratio":  {func(e, d Extended) bool { return e.SlabAutomoveRatio == d.SlabAutomoveRatio }, "0.8", "it has no slab pages to move"},
	"slab_automove_window": {func(e, d Extended) bool { return e.SlabAutomoveWindow == d.SlabAutomoveWindow }, "30", "it has no slab pages to move"},
	"hash_algorithm":       {func(e, d Extended) bool { return e.HashAlgorithm == d.HashAlgorithm }, "murmur3", "its index uses Go's own hash"},
	"lru_crawler_sleep":    {func(e, d Extended) bool { return e.LRUCrawlerSleep == d.LRUCrawlerSleep }, "100", "it has no LRU crawler thread"},
	"lru_crawler_tocrawl":  {func(e, d Extended) bool { return e.LRUCrawlerToCrawl == d.LRUCrawlerToCrawl }, "0", "it has no LRU crawler thread"},
	"hot_lru_pct":          {func(e, d Extended) bool { return e.HotLRUPct == d.HotLRUPct }, "20", "its LRU is not segmented into hot, warm and cold"},
	"warm_lru_pct":         {func(e, d Extended) bool { return e.WarmLRUPct == d.WarmLRUPct }, "40", "its LRU is not segmented into hot, warm and cold"},
	"hot_max_factor":       {func(e, d Extended) bool { return e.HotMaxFactor == d.HotMaxFactor }, "0.2", "its LRU is not segmented into hot, warm and cold"},
	"warm_max_factor":      {func(e, d Extended) bool { return e.WarmMaxFactor == d.WarmMaxFactor }, "2", "its LRU is not segmented into hot, warm and cold"},
	"idle_timeout":         {func(e, d Extended) bool { return e.IdleTimeout == d.IdleTimeout }, "0", "it does not close idle connections"},
	"watcher_logbuf_size":  {func(e, d Extended) bool { return e.WatcherLogbufSize == d.WatcherLogbufSize }, "256", "it has no watch command"},
	"read_buf_mem_limit":   {func(e, d Extended) bool { return e.ReadBufMemLimit == d.ReadBufMemLimit }, "0", "it does not cap read buffer memory apart from -m"},
	"ssl_wbuf_size":        {func(e, d Extended) bool { return e.SSLWbufSize == d.SSLWbufSize }, "16", "Go's TLS stack sizes its own write buffers"},
	"slab_chunk_max":       {func(e, d Extended) bool { return e.SlabChunkMax == d.SlabChunkMax }, "524288", "it has no slab classes (items take their own size)"},
}

// extRefused are -o suboptions refused whatever their value.
var extRefused = map[string]string{
	"no_maxconns_fast":        "over -c it always answers the error and closes (maxconns_fast)",
	"hashpower":               "its index grows on its own",
	"no_hashexpand":           "its index grows on its own",
	"no_slab_reassign":        "it has no slab pages: memory goes where the items are",
	"no_slab_automove":        "it has no slab pages: memory goes where the items are",
	"tail_repair_time":        "it has no item reference counts to repair",
	"no_lru_crawler":          "it has no LRU crawler thread to turn off",
	"no_lru_maintainer":       "its LRU is not segmented",
	"temporary_ttl":           "its LRU is not segmented (no temporary LRU)",
	"slab_sizes":              "it has no slab classes (items take their own size)",
	"worker_logbuf_size":      "it has no watch command (and memcached 1.6.18 also takes the value as slab_sizes)",
	"track_sizes":             "it keeps no item size histogram (stats sizes)",
	"no_chunked_items":        "it has no slab chunks",
	"no_modern":               "it has no slab classes, LRU maintainer or crawler to turn off",
	"sock_cookie_id":          "it does not mark its sockets",
	"ssl_ciphers":             "Go's TLS stack chooses its cipher suites",
	"ssl_session_cache":       "Go's TLS stack has no server-side session cache (it resumes sessions with tickets, as memcached does without this option)",
	"ssl_kernel_tls":          "Go's TLS stack has no kernel TLS offload",
	"slab_automove_freeratio": "it has no extstore (flash tier)",
}

// checkExtended refuses one -o item ("name" or "name=value") unless
// substrate honours it.
func checkExtended(item string, e Extended) error {
	name, _, _ := strings.Cut(item, "=")
	if strings.HasPrefix(name, "ext_") {
		return unsupported("-o "+item, "it has no extstore (flash tier); items live in memory only")
	}
	if why, ok := extRefused[name]; ok {
		return unsupported("-o "+item, why)
	}
	if d, ok := extDefaults[name]; ok && !d.isDefault(e, Default().Ext) {
		return unsupported("-o "+item, d.why+"; only the default "+name+"="+d.def+" is accepted")
	}
	// Everything else Parse accepts is honoured: maxconns_fast, modern,
	// (no_)inline_ascii_resp (no effect in memcached 1.6 either),
	// (no_)drop_privileges and relaxed_privileges (no effect in Debian's
	// build, which has no seccomp), resp_obj_mem_limit (a deprecation
	// warning), slab_reassign, lru_crawler, lru_maintainer and the TLS
	// options ssl_chain_cert, ssl_key, ssl_keyformat, ssl_verify_mode,
	// ssl_ca_cert and ssl_min_version.
	return nil
}
