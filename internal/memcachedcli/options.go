// Package memcachedcli parses memcached 1.6.18's command line and RDO's
// /etc/sysconfig/memcached into an Options value, reproducing the messages
// and exit codes of Debian's memcached 1.6.18 (built with TLS, SASL and
// extstore, without the proxy and without debug-only options) for every
// argument it rejects.
//
// The package is pure: it never resolves a host name, opens a socket or
// reads a file other than the sysconfig file it is asked to read.
//
// Typical use by `substrate memcached ARGS...`:
//
//	opts, err := memcachedcli.Parse(args)
//	switch {
//	case errors.Is(err, memcachedcli.ErrHelp):
//		fmt.Print(memcachedcli.Usage()) // exit 0
//	case errors.Is(err, memcachedcli.ErrVersion):
//		fmt.Println(memcachedcli.Version) // exit 0
//	}
//	for _, w := range opts.Warnings { // printed even when err != nil
//		fmt.Fprintln(os.Stderr, w)
//	}
//	var e *memcachedcli.Error
//	if errors.As(err, &e) {
//		if e.Msg != "" {
//			fmt.Fprintln(os.Stderr, e.Msg)
//		}
//		os.Exit(e.Code)
//	}
//	// then opts.CheckPrivileges(os.Geteuid()), opts.ListenAddrs()
package memcachedcli

import (
	"errors"
	"fmt"
)

// Version is what `memcached -V` prints.
const Version = "memcached 1.6.18"

// progName is argv[0] as getopt reports it in its own messages.
const progName = "memcached"

// Exit codes memcached uses.
const (
	ExitFailure = 1  // EXIT_FAILURE: most option errors ("return 1" in main)
	ExitUsage   = 64 // EX_USAGE: cross-field checks, -B, privilege checks
	ExitOSErr   = 71 // EX_OSERR: "failed to listen on ..." at bind time
)

// Requests that memcached answers by printing to stdout and exiting 0.
var (
	ErrHelp    = errors.New("memcachedcli: help requested (-h)")
	ErrVersion = errors.New("memcachedcli: version requested (-V)")
	ErrLicense = errors.New("memcachedcli: license requested (-i)")
)

// Error is a command line that memcached refuses. Msg is exactly what
// memcached writes to stderr (lines joined by "\n", without the final
// newline; empty in the one case where memcached prints nothing, an empty
// "-o slab_sizes="); Code is its exit status. Print the Options' Warnings,
// then Msg and a newline (unless Msg is empty), and exit with Code.
type Error struct {
	Msg  string
	Code int
}

func (e *Error) Error() string { return e.Msg }

func fail(code int, format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Code: code}
}

// Protocol values for Options.Protocol (-B).
const (
	ProtoAuto   = "auto"
	ProtoBinary = "binary"
	ProtoASCII  = "ascii"
)

// Sizes fixed at compile time in memcached 1.6.18.
const (
	slabPageSize        = 1024 * 1024 // settings.slab_page_size
	itemSizeMaxLower    = 1024        // ITEM_SIZE_MAX_LOWER_LIMIT
	itemSizeMaxUpper    = 1024 * 1024 * 1024
	maxSlabClasses      = 64 // MAX_NUMBER_OF_SLAB_CLASSES
	chunkAlignBytes     = 8  // CHUNK_ALIGN_BYTES
	defaultSlabChunkMax = slabPageSize / 2
)

// Options holds memcached 1.6.18's settings. Integer fields keep the value
// memcached itself would hold after its own C conversions (atoi, strtol
// with 32-bit truncation), so that `stats settings` can report them the
// same way. Zero values are not defaults: start from Default().
type Options struct {
	Port       int  // -p, --port (default 11211; 0 disables TCP)
	PortSet    bool // -p was given (memcached's tcp_specified)
	UDPPort    int  // -U, --udp-port (default 0 = off since 1.5.6)
	UDPPortSet bool // -U was given

	// Inter is the -l string exactly as memcached stores it (`stats
	// settings` "inter"): repeated -l values joined by ",", except that a
	// value already contained in the string as a substring is dropped
	// (a 1.6.18 quirk: "-l 127.0.0.1 -l 127.0.0.1" listens once). Empty
	// means no -l: all interfaces.
	Inter    string
	interSet bool // a -l was given (even an empty one)
	// Listen is Inter split on "," and ";" with empty items removed: the
	// items memcached binds, each "host", "host:port", "[v6]", "[v6]:port",
	// a bare IPv6 address, or "*", optionally prefixed by "notls:",
	// "proto[...]:" or "tag[...]:". Host names are not resolved here. Use
	// ListenAddrs to split the items into hosts and ports.
	Listen []string

	UnixSocket string // -s, --unix-socket (disables TCP and UDP)
	UnixMask   int    // -a, --unix-mask, octal (default 0700)

	MemoryMB    int  // -m, --memory-limit in megabytes, atoi (default 64)
	NoEvict     bool // -M, --disable-evictions
	MaxConns    int  // -c, --conn-limit (default 1024)
	MaxItemSize int  // -I, --max-item-size in bytes (default 1m)

	User      string // -u, --user
	PidFile   string // -P, --pidfile
	Daemonize bool   // -d, --daemon

	Threads      int  // -t, --threads (default 4)
	ThreadsSet   bool // -t was given
	Verbosity    int  // -v count (-v, -vv, -vvv, --verbose[=x])
	SASL         bool // -S, --enable-sasl
	TLS          bool // -Z, --enable-ssl
	LockMemory   bool // -k, --lock-memory
	Coredumps    bool // -r, --enable-coredumps
	LargePages   bool // -L, --enable-largepages
	DisableCAS   bool // -C, --disable-cas
	NoFlushAll   bool // -F, --disable-flush-all
	NoDumping    bool // -X, --disable-dumping
	NoWatch      bool // -W, --disable-watch
	Shutdown     bool // -A, --enable-shutdown
	ReqsPerEvent int  // -R, --max-reqs-per-event (default 20)
	Backlog      int  // -b, --listen-backlog (default 1024)

	Protocol    string // -B, --protocol: ProtoAuto (default), ProtoBinary, ProtoASCII
	ProtocolSet bool   // -B was given

	PrefixDelimiter byte    // -D (default ':')
	DetailEnabled   bool    // set by -D
	Factor          float64 // -f, --slab-growth-factor (default 1.25)
	ChunkSize       int     // -n, --slab-min-size (default 48)

	AuthFile   string // -Y, --auth-file
	MemoryFile string // -e, --memory-file
	NAPIIDs    int    // -N, --napi-ids (0 = unset)

	Ext Extended // -o, --extended

	// Positional holds non-option words, which memcached ignores (RDO and
	// puppet put "> /var/log/memcached.log 2>&1" into OPTIONS).
	Positional []string
	// Warnings are lines memcached prints to stderr but still starts
	// with (-t over 64, deprecated suboptions). Print them in order.
	Warnings []string
}

// Extended holds the -o suboptions memcached 1.6.18 knows. Byte sizes are
// already multiplied out as memcached does (kilobytes or megabytes).
type Extended struct {
	// Raw lists every suboption as given, in order ("name" or "name=value").
	Raw []string

	MaxconnsFast       bool    // maxconns_fast / no_maxconns_fast (default on)
	HashPower          int     // hashpower (12..32; 0 = automatic)
	NoHashExpand       bool    // no_hashexpand
	SlabReassign       bool    // slab_reassign / no_slab_reassign (default on)
	SlabAutomove       int     // slab_automove[=0..2] / no_slab_automove (default 1)
	SlabAutomoveRatio  float64 // slab_automove_ratio (default 0.8)
	SlabAutomoveWindow int     // slab_automove_window (default 30)
	TailRepairTime     int     // tail_repair_time (default 0 = off)
	HashAlgorithm      string  // hash_algorithm: jenkins, murmur3 (default), xxh3
	LRUCrawler         bool    // lru_crawler / no_lru_crawler (default on)
	LRUCrawlerSleep    int     // lru_crawler_sleep in µs (default 100)
	LRUCrawlerToCrawl  uint32  // lru_crawler_tocrawl (default 0)
	LRUMaintainer      bool    // lru_maintainer / no_lru_maintainer (default on)
	LRUSegmented       bool    // follows lru_maintainer (default on)
	HotLRUPct          int     // hot_lru_pct (default 20)
	WarmLRUPct         int     // warm_lru_pct (default 40)
	HotMaxFactor       float64 // hot_max_factor (default 0.2)
	WarmMaxFactor      float64 // warm_max_factor (default 2.0)
	TempLRU            bool    // set by temporary_ttl
	TemporaryTTL       int     // temporary_ttl (default 61)
	IdleTimeout        int     // idle_timeout in seconds (default 0 = none)
	WatcherLogbufSize  uint32  // watcher_logbuf_size, bytes (default 256k)
	WorkerLogbufSize   uint32  // worker_logbuf_size, bytes (default 64k)
	SlabSizes          string  // slab_sizes, unparsed ("96-192-384"); checked by Validate
	SlabSizesSet       bool    // slab_sizes was given (even empty)
	// SlabChunkMax is slab_chunk_max in bytes (default 512k). memcached's
	// help says kilobytes, but 1.6.18 uses the number as bytes.
	SlabChunkMax      int
	SlabChunkMaxSet   bool              // slab_chunk_max was given
	TrackSizes        bool              // track_sizes
	DropPrivileges    bool              // drop_privileges / no_drop_privileges (default on)
	RelaxedPrivileges bool              // relaxed_privileges (debug builds only; see Parse)
	ReadBufMemLimit   uint32            // read_buf_mem_limit, bytes (default 0 = unlimited)
	SockCookieID      int               // sock_cookie_id
	SSLChainCert      string            // ssl_chain_cert
	SSLKey            string            // ssl_key
	SSLKeyFormat      int               // ssl_keyformat (default 1 = PEM)
	SSLVerifyMode     int               // ssl_verify_mode 0..3 (default 0)
	SSLCiphers        string            // ssl_ciphers
	SSLCACert         string            // ssl_ca_cert
	SSLWbufSize       uint32            // ssl_wbuf_size, bytes (default 16k)
	SSLSessionCache   bool              // ssl_session_cache
	SSLKernelTLS      bool              // ssl_kernel_tls
	SSLMinVersion     int               // ssl_min_version 0..3 (default 2 = TLS 1.2)
	ExtStore          map[string]string // ext_* and slab_automove_freeratio, validated, unparsed
	NoChunkedItems    bool              // no_chunked_items
}

// Default returns memcached 1.6.18's defaults (settings_init plus the
// defaults main() applies).
func Default() Options {
	return Options{
		Port:            11211,
		UDPPort:         0,
		UnixMask:        0o700,
		MemoryMB:        64,
		MaxConns:        1024,
		MaxItemSize:     1024 * 1024,
		Threads:         4,
		ReqsPerEvent:    20,
		Backlog:         1024,
		Protocol:        ProtoAuto,
		PrefixDelimiter: ':',
		Factor:          1.25,
		ChunkSize:       48,
		Ext: Extended{
			MaxconnsFast:       true,
			SlabReassign:       true,
			SlabAutomove:       1,
			SlabAutomoveRatio:  0.8,
			SlabAutomoveWindow: 30,
			HashAlgorithm:      "murmur3",
			LRUCrawler:         true,
			LRUCrawlerSleep:    100,
			LRUMaintainer:      true,
			LRUSegmented:       true,
			HotLRUPct:          20,
			WarmLRUPct:         40,
			HotMaxFactor:       0.2,
			WarmMaxFactor:      2.0,
			TemporaryTTL:       61,
			WatcherLogbufSize:  256 * 1024,
			WorkerLogbufSize:   64 * 1024,
			SlabChunkMax:       defaultSlabChunkMax,
			DropPrivileges:     true,
			SSLKeyFormat:       1,
			SSLWbufSize:        16 * 1024,
			SSLMinVersion:      2,
		},
	}
}

// MaxBytes is the item memory limit in bytes, computed as memcached does:
// (size_t)atoi(-m) * 1 MiB, so a negative -m wraps to a huge limit.
func (o Options) MaxBytes() uint64 {
	return uint64(int64(o.MemoryMB)) * 1024 * 1024
}

// BindingProtocol is the `stats settings` spelling of Protocol.
func (o Options) BindingProtocol() string {
	if o.Protocol == ProtoAuto || o.Protocol == "" {
		return "auto-negotiate"
	}
	return o.Protocol
}

// Validate performs the checks memcached 1.6.18 makes after reading all
// options and before touching the system, in memcached's order, returning
// the first failure with memcached's message and exit code. Parse already
// calls it. It does not check privileges (see CheckPrivileges) and does
// not look at -l items (see ListenAddrs).
func (o Options) Validate() error {
	if o.NAPIIDs > 0 && o.NAPIIDs > o.Threads {
		return fail(ExitUsage, "Number of napi_ids(%d) cannot be greater than number of threads(%d)", o.NAPIIDs, o.Threads)
	}
	if o.MaxItemSize < itemSizeMaxLower {
		return fail(ExitUsage, "Item max size cannot be less than 1024 bytes.")
	}
	// C compares int against size_t: the (positive) int is converted.
	if uint64(o.MaxItemSize) > o.MaxBytes()/2 {
		return fail(ExitUsage, "Cannot set item size limit higher than 1/2 of memory max.")
	}
	if o.MaxItemSize > itemSizeMaxUpper {
		return fail(ExitUsage, "Cannot set item size limit higher than a gigabyte.")
	}
	chunk := o.effectiveSlabChunkMax()
	if chunk > o.MaxItemSize {
		return fail(ExitUsage, "slab_chunk_max (bytes: %d) cannot be larger than -I (item_size_max %d)", chunk, o.MaxItemSize)
	}
	if chunk == 0 {
		// memcached divides by zero here (SIGFPE); refuse instead.
		return fail(ExitUsage, "slab_chunk_max (bytes: 0) must be greater than 0")
	}
	if o.MaxItemSize%chunk != 0 {
		return fail(ExitUsage, "-I (item_size_max: %d) must be evenly divisible by slab_chunk_max (bytes: %d)", o.MaxItemSize, chunk)
	}
	if slabPageSize%chunk != 0 {
		return fail(ExitUsage, "slab_chunk_max (bytes: %d) must divide evenly into %d (slab_page_size)", chunk, slabPageSize)
	}
	if o.Ext.SlabSizesSet {
		if o.Ext.SlabSizes == "" {
			// _parse_slab_sizes fails silently on an empty string.
			return &Error{Msg: "", Code: ExitUsage}
		}
		if _, err := parseSlabSizes(o.Ext.SlabSizes, o.ChunkSize, o.MaxItemSize); err != nil {
			return err
		}
	}
	if o.Ext.HotLRUPct+o.Ext.WarmLRUPct > 80 {
		return fail(ExitUsage, "hot_lru_pct + warm_lru_pct cannot be more than 80%% combined")
	}
	if o.Ext.TempLRU && !o.Ext.LRUMaintainer {
		return fail(ExitUsage, "temporary_ttl requires lru_maintainer to be enabled")
	}
	if o.SASL {
		if o.ProtocolSet && o.Protocol != ProtoBinary {
			return fail(ExitUsage, "ERROR: You cannot allow the ASCII protocol while using SASL.")
		}
		if o.UDPPort != 0 {
			return fail(ExitUsage, "ERROR: Cannot enable UDP while using binary SASL authentication.")
		}
	}
	if o.AuthFile != "" && o.ProtocolSet && o.Protocol != ProtoASCII {
		return fail(ExitUsage, "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.")
	}
	port := o.effectivePort()
	if port > 65535 {
		return fail(ExitUsage, "ERROR: Invalid port number %d.", port)
	}
	if o.TLS && port == 0 {
		return fail(ExitUsage, "ERROR: You cannot enable SSL without a TCP port.")
	}
	// memcached makes this check after dropping privileges (so as root
	// without -u it reports the -u error first; see CheckPrivileges).
	if o.AuthFile != "" && o.UDPPort != 0 {
		return fail(ExitUsage, "Cannot use UDP with ascii authentication enabled (-U 0 to disable)")
	}
	return nil
}

// CheckPrivileges reports memcached's refusal to run as root (euid 0)
// without -u. memcached makes this check after Validate's checks, except
// the last (-Y with UDP).
func (o Options) CheckPrivileges(euid int) error {
	if euid == 0 && o.User == "" {
		return fail(ExitUsage, "can't run as root without the -u switch")
	}
	return nil
}

// effectivePort applies memcached's rule that -U without -p also moves the
// TCP port ("if (udp_specified && udpport != 0 && !tcp_specified)").
func (o Options) effectivePort() int {
	if o.UDPPortSet && o.UDPPort != 0 && !o.PortSet {
		return o.UDPPort
	}
	return o.Port
}

// effectiveSlabChunkMax applies memcached's default for large items: with
// -I above 1m and no explicit slab_chunk_max, chunks are half a page.
func (o Options) effectiveSlabChunkMax() int {
	if o.MaxItemSize > 1024*1024 && !o.Ext.SlabChunkMaxSet {
		return slabPageSize / 2
	}
	return o.Ext.SlabChunkMax
}

// parseSlabSizes mimics memcached's _parse_slab_sizes for -o slab_sizes:
// "-"-separated, strictly increasing by more than 8 bytes, each between -n
// and -I, at most 62 classes.
func parseSlabSizes(s string, chunkSize, itemSizeMax int) ([]uint32, error) {
	var sizes []uint32
	var last uint32
	for _, p := range splitTokens(s, "-") {
		size, ok := safeStrtoul(p)
		// size is uint32_t and the limits are int: C converts the ints.
		if !ok || size < uint32(chunkSize) || size > uint32(itemSizeMax) {
			return nil, fail(ExitUsage, "slab size %d is out of valid range", size)
		}
		if last >= size {
			return nil, fail(ExitUsage, "slab size %d cannot be lower than or equal to a previous class size", size)
		}
		if size <= last+chunkAlignBytes {
			return nil, fail(ExitUsage, "slab size %d must be at least %d bytes larger than previous class", size, chunkAlignBytes)
		}
		sizes = append(sizes, size)
		last = size
		if len(sizes) >= maxSlabClasses-1 {
			return nil, fail(ExitUsage, "too many slab classes specified")
		}
	}
	return sizes, nil
}

// splitTokens mimics strtok(3): split on any byte of seps, dropping empty
// tokens.
func splitTokens(s, seps string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		sep := i == len(s)
		if !sep {
			for j := 0; j < len(seps); j++ {
				if s[i] == seps[j] {
					sep = true
					break
				}
			}
		}
		switch {
		case sep && start >= 0:
			out = append(out, s[start:i])
			start = -1
		case !sep && start < 0:
			start = i
		}
	}
	return out
}
