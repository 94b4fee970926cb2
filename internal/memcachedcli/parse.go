package memcachedcli

import (
	"strings"
)

// Parse reads memcached 1.6.18's command line (without argv[0]) the way
// memcached's main() does: options are applied in order and the first
// rejected option ends parsing; then Validate's cross-field checks run.
//
// On success it returns the options. -h, -V and -i return ErrHelp,
// ErrVersion and ErrLicense as soon as they are reached (memcached prints
// and exits 0 there, so an error in a later option is never seen). Any
// other failure is an *Error with memcached's stderr text and exit code;
// the returned Options always carry the Warnings memcached would have
// printed before stopping, and when Validate fails they hold everything
// parsed.
//
// Deliberate differences from Debian's build:
//   - "-o relaxed_privileges" is accepted (memcached's test harness passes
//     it; only debug builds of memcached know it);
//   - "-o slab_sizes", "-o slab_chunk_max" and "-o sock_cookie_id" without
//     "=value" crash memcached; Parse reports a "Missing ... argument"
//     error (exit 1) instead;
//   - "-o slab_chunk_max=x" makes memcached print a warning and later
//     divide by zero; Parse keeps the warning and Validate refuses.
//
// Parse does not check privileges (CheckPrivileges), resolve -l items
// (ListenAddrs), read -Y/-e files or load TLS certificates.
func Parse(args []string) (Options, error) {
	o := Default()
	g := &getopt{args: args}
	for {
		c, arg, hasArg, done, gerr := g.next()
		if gerr != nil {
			return o, gerr
		}
		if done {
			break
		}
		if err := o.apply(c, arg, hasArg); err != nil {
			return o, err
		}
	}
	o.Positional = g.positional

	// Post-parse adjustments memcached makes to settings.
	if o.MaxItemSize > 1024*1024 && !o.Ext.SlabChunkMaxSet {
		o.Ext.SlabChunkMax = slabPageSize / 2
	}
	if o.SASL && !o.ProtocolSet {
		o.Protocol = ProtoBinary
	}
	if o.AuthFile != "" && !o.ProtocolSet {
		o.Protocol = ProtoASCII
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	o.Port = o.effectivePort()
	return o, nil
}

// apply handles one option letter, as memcached's getopt switch does.
func (o *Options) apply(c byte, arg string, hasArg bool) error {
	switch c {
	case 'A':
		o.Shutdown = true
	case 'Z':
		o.TLS = true
	case 'a':
		o.UnixMask = octal(arg)
	case 'U':
		o.UDPPort = atoi(arg)
		o.UDPPortSet = true
	case 'p':
		o.Port = atoi(arg)
		o.PortSet = true
	case 's':
		o.UnixSocket = arg
	case 'm':
		o.MemoryMB = atoi(arg)
	case 'M':
		o.NoEvict = true
	case 'c':
		o.MaxConns = atoi(arg)
		if o.MaxConns <= 0 {
			return fail(ExitFailure, "Maximum connections must be greater than 0")
		}
	case 'h':
		return ErrHelp
	case 'i':
		return ErrLicense
	case 'V':
		return ErrVersion
	case 'k':
		o.LockMemory = true
	case 'v':
		o.Verbosity++ // "--verbose=x" too: the value is ignored
	case 'l':
		o.addListen(arg)
	case 'd':
		o.Daemonize = true
	case 'r':
		o.Coredumps = true
	case 'R':
		o.ReqsPerEvent = atoi(arg)
		if o.ReqsPerEvent == 0 {
			return fail(ExitFailure, "Number of requests per event must be greater than 0")
		}
	case 'u':
		o.User = arg
	case 'P':
		o.PidFile = arg
	case 'e':
		o.MemoryFile = arg
	case 'f':
		o.Factor = atof(arg)
		if o.Factor <= 1.0 {
			return fail(ExitFailure, "Factor must be greater than 1")
		}
	case 'n':
		o.ChunkSize = atoi(arg)
		if o.ChunkSize == 0 {
			return fail(ExitFailure, "Chunk size must be greater than 0")
		}
	case 't':
		o.Threads = atoi(arg)
		o.ThreadsSet = true
		if o.Threads <= 0 {
			return fail(ExitFailure, "Number of threads must be greater than 0")
		}
		if o.Threads > 64 {
			o.Warnings = append(o.Warnings, "WARNING: Setting a high number of workerthreads is not recommended.\n"+
				" Set this value to the number of cores in your machine or less.")
		}
	case 'D':
		if arg == "" {
			return fail(ExitFailure, "No delimiter specified")
		}
		o.PrefixDelimiter = arg[0]
		o.DetailEnabled = true
	case 'L':
		o.LargePages = true
	case 'C':
		o.DisableCAS = true
	case 'b':
		o.Backlog = atoi(arg)
	case 'B':
		switch arg {
		case ProtoAuto, ProtoBinary, ProtoASCII:
			o.Protocol = arg
			o.ProtocolSet = true
		default:
			return fail(ExitUsage, "Invalid value for binding protocol: %s\n -- should be one of auto, binary, or ascii", arg)
		}
	case 'I':
		o.MaxItemSize = parseItemSize(arg)
	case 'S':
		o.SASL = true
	case 'F':
		o.NoFlushAll = true
	case 'X':
		o.NoDumping = true
	case 'W':
		o.NoWatch = true
	case 'Y':
		o.AuthFile = arg
	case 'N':
		o.NAPIIDs = atoi(arg)
		if o.NAPIIDs <= 0 {
			return fail(ExitFailure, "Maximum number of NAPI IDs must be greater than 0")
		}
	case 'o':
		return o.applyExtended(arg)
	}
	return nil
}

// addListen appends a -l value the way memcached does, including its
// substring de-duplication (strstr(settings.inter, optarg)).
func (o *Options) addListen(arg string) {
	switch {
	case !o.interSet:
		o.Inter, o.interSet = arg, true
	case strings.Contains(o.Inter, arg):
		return
	default:
		o.Inter += "," + arg
	}
	o.Listen = splitTokens(o.Inter, ",;")
}

// parseItemSize mimics memcached's -I handling: an optional trailing k/K
// or m/M multiplies the atoi of the rest (in 32-bit int arithmetic, so
// "2048m" wraps negative); anything else is a plain atoi.
func parseItemSize(arg string) int {
	if arg == "" {
		return 0
	}
	unit := arg[len(arg)-1]
	n := atoi(arg[:len(arg)-1])
	switch unit {
	case 'k', 'K':
		return int(int32(n) * 1024)
	case 'm', 'M':
		return int(int32(n) * 1024 * 1024)
	}
	return atoi(arg)
}

// getsubopt mimics glibc getsubopt(3) over a -o argument: it returns the
// next suboption's name, its value (hasValue false when there is no "="),
// the whole item as written ("name=value", which memcached prints when
// the name is unknown), and the rest of the string.
func getsubopt(s string) (name, value string, hasValue bool, item, rest string) {
	item, rest, _ = strings.Cut(s, ",")
	name, value, hasValue = strings.Cut(item, "=")
	return name, value, hasValue, item, rest
}

// applyExtended handles one -o argument (a comma-separated list).
func (o *Options) applyExtended(arg string) error {
	e := &o.Ext
	for s := arg; s != ""; {
		name, value, hasValue, item, rest := getsubopt(s)
		s = rest
		e.Raw = append(e.Raw, item)
		missing := func(msg string) error {
			return fail(ExitFailure, "%s", msg)
		}
		noParse := func() error {
			return fail(ExitFailure, "could not parse argument to %s", name)
		}
		switch name {
		case "maxconns_fast":
			e.MaxconnsFast = true
		case "no_maxconns_fast":
			e.MaxconnsFast = false
		case "hashpower":
			if !hasValue {
				return missing("Missing numeric argument for hashpower")
			}
			e.HashPower = atoi(value)
			if e.HashPower < 12 {
				return fail(ExitFailure, "Initial hashtable multiplier of %d is too low", e.HashPower)
			}
			if e.HashPower > 32 {
				return fail(ExitFailure, "Initial hashtable multiplier of %d is too high\n"+
					"Choose a value based on \"STAT hash_power_level\" from a running instance", e.HashPower)
			}
		case "no_hashexpand":
			e.NoHashExpand = true
		case "slab_reassign":
			e.SlabReassign = true
		case "no_slab_reassign":
			e.SlabReassign = false
		case "slab_automove":
			if !hasValue {
				e.SlabAutomove = 1
				break
			}
			e.SlabAutomove = atoi(value)
			if e.SlabAutomove < 0 || e.SlabAutomove > 2 {
				return fail(ExitFailure, "slab_automove must be between 0 and 2")
			}
		case "no_slab_automove":
			e.SlabAutomove = 0
		case "slab_automove_ratio":
			if !hasValue {
				return missing("Missing slab_automove_ratio argument")
			}
			e.SlabAutomoveRatio = atof(value)
			if e.SlabAutomoveRatio <= 0 || e.SlabAutomoveRatio > 1 {
				return fail(ExitFailure, "slab_automove_ratio must be > 0 and < 1")
			}
		case "slab_automove_window":
			if !hasValue {
				return missing("Missing slab_automove_window argument")
			}
			e.SlabAutomoveWindow = atoi(value)
			if e.SlabAutomoveWindow < 3 {
				return fail(ExitFailure, "slab_automove_window must be > 2")
			}
		case "tail_repair_time":
			if !hasValue {
				return missing("Missing numeric argument for tail_repair_time")
			}
			e.TailRepairTime = atoi(value)
			if e.TailRepairTime < 10 {
				return fail(ExitFailure, "Cannot set tail_repair_time to less than 10 seconds")
			}
		case "hash_algorithm":
			if !hasValue {
				return missing("Missing hash_algorithm argument")
			}
			switch value {
			case "jenkins", "murmur3", "xxh3":
				e.HashAlgorithm = value
			default:
				return fail(ExitFailure, "Unknown hash_algorithm option (jenkins, murmur3, xxh3)")
			}
		case "lru_crawler":
			e.LRUCrawler = true
		case "no_lru_crawler":
			e.LRUCrawler = false
		case "lru_crawler_sleep":
			if !hasValue {
				return missing("Missing lru_crawler_sleep value")
			}
			e.LRUCrawlerSleep = atoi(value)
			if e.LRUCrawlerSleep > 1000000 || e.LRUCrawlerSleep < 0 {
				return fail(ExitFailure, "LRU crawler sleep must be between 0 and 1 second")
			}
		case "lru_crawler_tocrawl":
			if !hasValue {
				return missing("Missing lru_crawler_tocrawl value")
			}
			v, ok := safeStrtoul(value)
			if !ok {
				return fail(ExitFailure, "lru_crawler_tocrawl takes a numeric 32bit value")
			}
			e.LRUCrawlerToCrawl = v
		case "lru_maintainer":
			e.LRUMaintainer, e.LRUSegmented = true, true
		case "no_lru_maintainer":
			e.LRUMaintainer, e.LRUSegmented = false, false
		case "hot_lru_pct", "warm_lru_pct":
			if !hasValue {
				return missing("Missing " + name + " argument")
			}
			v := atoi(value)
			if v < 1 || v >= 80 {
				return fail(ExitFailure, "%s must be > 1 and < 80", name)
			}
			if name == "hot_lru_pct" {
				e.HotLRUPct = v
			} else {
				e.WarmLRUPct = v
			}
		case "hot_max_factor", "warm_max_factor":
			if !hasValue {
				return missing("Missing " + name + " argument")
			}
			v := atof(value)
			if v <= 0 {
				return fail(ExitFailure, "%s must be > 0", name)
			}
			if name == "hot_max_factor" {
				e.HotMaxFactor = v
			} else {
				e.WarmMaxFactor = v
			}
		case "temporary_ttl":
			if !hasValue {
				return missing("Missing temporary_ttl argument")
			}
			e.TempLRU = true
			e.TemporaryTTL = atoi(value)
		case "idle_timeout":
			if !hasValue {
				return missing("Missing numeric argument for idle_timeout")
			}
			e.IdleTimeout = atoi(value)
		case "watcher_logbuf_size", "worker_logbuf_size":
			if !hasValue {
				return missing("Missing " + name + " argument")
			}
			v, ok := safeStrtoul(value)
			if !ok {
				return noParse()
			}
			v *= 1024 // kilobytes
			if name == "watcher_logbuf_size" {
				e.WatcherLogbufSize = v
			} else {
				e.WorkerLogbufSize = v
				// memcached 1.6.18 bug: this case falls through into
				// slab_sizes, so the value is also taken as slab_sizes
				// ("worker_logbuf_size=4": "slab size 4 is out of valid
				// range").
				e.SlabSizes, e.SlabSizesSet = value, true
			}
		case "slab_sizes":
			if !hasValue {
				return missing("Missing slab_sizes argument") // memcached crashes
			}
			e.SlabSizes, e.SlabSizesSet = value, true
		case "slab_chunk_max":
			if !hasValue {
				return missing("Missing slab_chunk_max argument") // memcached crashes
			}
			v, ok := safeStrtol(value)
			if !ok {
				// memcached only warns, leaving 0 behind.
				o.Warnings = append(o.Warnings, "could not parse argument to slab_chunk_max")
			}
			e.SlabChunkMax, e.SlabChunkMaxSet = v, true
		case "track_sizes":
			e.TrackSizes = true
		case "no_inline_ascii_resp", "inline_ascii_resp":
			// Accepted and ignored since 1.6 (stats say "no" either way).
		case "no_chunked_items":
			e.NoChunkedItems = true
			e.SlabChunkMax = slabPageSize
		case "modern":
			// 1.6.18: "currently: nothing"
		case "no_modern":
			if !e.SlabChunkMaxSet {
				e.SlabChunkMax = slabPageSize
			}
			e.SlabReassign = false
			e.SlabAutomove = 0
			e.MaxconnsFast = false
			e.LRUSegmented = false
			e.HashAlgorithm = "jenkins"
			e.LRUCrawler = false
			e.LRUMaintainer = false
		case "no_drop_privileges":
			e.DropPrivileges = false
		case "drop_privileges":
			e.DropPrivileges = true
		case "relaxed_privileges":
			e.RelaxedPrivileges = true
		case "resp_obj_mem_limit":
			o.Warnings = append(o.Warnings, "DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,")
		case "read_buf_mem_limit":
			if !hasValue {
				return missing("Missing read_buf_mem_limit argument")
			}
			v, ok := safeStrtoul(value)
			if !ok {
				return noParse()
			}
			e.ReadBufMemLimit = v * 1024 * 1024 // megabytes
		case "sock_cookie_id":
			if !hasValue {
				return missing("Missing sock_cookie_id argument") // memcached crashes
			}
			e.SockCookieID = atoi(value)
		case "ssl_chain_cert", "ssl_key", "ssl_ciphers", "ssl_ca_cert":
			if !hasValue {
				return missing("Missing " + name + " argument")
			}
			switch name {
			case "ssl_chain_cert":
				e.SSLChainCert = value
			case "ssl_key":
				e.SSLKey = value
			case "ssl_ciphers":
				e.SSLCiphers = value
			case "ssl_ca_cert":
				e.SSLCACert = value
			}
		case "ssl_keyformat":
			if !hasValue {
				return missing("Missing ssl_keyformat argument")
			}
			v, ok := safeStrtol(value)
			if !ok {
				return noParse()
			}
			e.SSLKeyFormat = v
		case "ssl_verify_mode", "ssl_min_version":
			if !hasValue {
				return missing("Missing " + name + " argument")
			}
			v, ok := safeStrtol(value)
			if !ok {
				return noParse()
			}
			if v < 0 || v > 3 {
				return fail(ExitFailure, "Invalid %s. Use help to see valid options.", name)
			}
			if name == "ssl_verify_mode" {
				e.SSLVerifyMode = v
			} else {
				e.SSLMinVersion = v
			}
		case "ssl_wbuf_size":
			if !hasValue {
				return missing("Missing ssl_wbuf_size argument")
			}
			v, ok := safeStrtoul(value)
			if !ok {
				return noParse()
			}
			e.SSLWbufSize = v * 1024 // kilobytes
		case "ssl_session_cache":
			e.SSLSessionCache = true
		case "ssl_kernel_tls":
			e.SSLKernelTLS = true
		default:
			handled, err := e.applyExtstore(name, value, hasValue)
			if err != nil {
				return err
			}
			if !handled {
				return fail(ExitFailure, "Illegal suboption \"%s\"", item)
			}
		}
	}
	return nil
}

// extstoreUint lists the extstore suboptions memcached parses with
// safe_strtoul, extstoreFloat those parsed with safe_strtod.
var (
	extstoreUint = map[string]bool{
		"ext_page_size": true, "ext_wbuf_size": true, "ext_threads": true,
		"ext_io_depth": true, "ext_item_size": true, "ext_item_age": true,
		"ext_low_ttl": true, "ext_recache_rate": true, "ext_compact_under": true,
		"ext_drop_under": true, "ext_max_sleep": true,
	}
	extstoreFloat = map[string]bool{"ext_max_frag": true, "slab_automove_freeratio": true}
)

// applyExtstore validates the extstore suboptions the way memcached's
// storage_read_config does and records them unparsed (extstore is not
// something substrate implements). handled is false for unknown names.
func (e *Extended) applyExtstore(name, value string, hasValue bool) (handled bool, err error) {
	record := func() {
		if e.ExtStore == nil {
			e.ExtStore = map[string]string{}
		}
		e.ExtStore[name] = value
	}
	switch {
	case name == "ext_path":
		if !hasValue {
			return true, fail(ExitFailure, "missing argument to ext_path, ie: ext_path=/d/file:5G")
		}
		if !strings.Contains(value, ":") {
			return true, fail(ExitFailure, "must supply size to ext_path, ie: ext_path=/f/e:64m (M|G|T|P supported)\n"+
				"failed to parse ext_path argument")
		}
	case name == "ext_drop_unread":
	case extstoreUint[name]:
		if !hasValue {
			return true, fail(ExitFailure, "Missing %s argument", name)
		}
		if _, ok := safeStrtoul(value); !ok {
			return true, fail(ExitFailure, "could not parse argument to %s", name)
		}
	case extstoreFloat[name]:
		if !hasValue {
			return true, fail(ExitFailure, "Missing %s argument", name)
		}
		if _, ok := safeStrtod(value); !ok {
			return true, fail(ExitFailure, "could not parse argument to %s", name)
		}
	default:
		return false, nil
	}
	record()
	return true, nil
}
