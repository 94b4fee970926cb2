package memcachedcli

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// validCases are command lines memcached 1.6.18 accepts, with the options
// they produce (as changes to Default()).
var validCases = []struct {
	name string
	args []string
	want func(o *Options)
}{
	{"empty", nil, func(o *Options) {}},
	{"short separate", []string{"-p", "11212", "-U", "0", "-m", "256", "-c", "5000", "-v", "-l", "10.0.0.1"}, func(o *Options) {
		o.Port, o.PortSet = 11212, true
		o.UDPPortSet = true
		o.MemoryMB = 256
		o.MaxConns = 5000
		o.Verbosity = 1
		o.Inter, o.interSet, o.Listen = "10.0.0.1", true, []string{"10.0.0.1"}
	}},
	{"short attached", []string{"-p11212", "-m256", "-c5000", "-ucache"}, func(o *Options) {
		o.Port, o.PortSet = 11212, true
		o.MemoryMB = 256
		o.MaxConns = 5000
		o.User = "cache"
	}},
	{"long forms", []string{"--port=11212", "--memory-limit", "128", "--conn-limit=10", "--user", "memcached", "--listen=::1", "--threads=2", "--daemon", "--pidfile=/run/m.pid"}, func(o *Options) {
		o.Port, o.PortSet = 11212, true
		o.MemoryMB = 128
		o.MaxConns = 10
		o.User = "memcached"
		o.Inter, o.interSet, o.Listen = "::1", true, []string{"::1"}
		o.Threads, o.ThreadsSet = 2, true
		o.Daemonize = true
		o.PidFile = "/run/m.pid"
	}},
	{"long abbreviations", []string{"--po", "1", "--verb", "--conn=3"}, func(o *Options) {
		o.Port, o.PortSet = 1, true
		o.Verbosity = 1
		o.MaxConns = 3
	}},
	{"verbosity counts", []string{"-vv", "-v", "--verbose=9"}, func(o *Options) { o.Verbosity = 4 }},
	{"clustered flags", []string{"-dMkCvvv"}, func(o *Options) {
		o.Daemonize, o.NoEvict, o.LockMemory, o.DisableCAS = true, true, true, true
		o.Verbosity = 3
	}},
	{"cluster ending in arg", []string{"-vp", "9"}, func(o *Options) { o.Verbosity = 1; o.Port, o.PortSet = 9, true }},
	{"positional ignored", []string{">>", "/var/log/memcached.log", "-p", "2", "2>&1", "-", "--", "-c", "0"}, func(o *Options) {
		o.Port, o.PortSet = 2, true
		o.Positional = []string{">>", "/var/log/memcached.log", "2>&1", "-", "-c", "0"}
	}},
	{"listen accumulates and dedupes substrings", []string{"-l", "127.0.0.1,::1", "-l", "controller", "-l", "127.0.0.1", "-l", "10.0.0.1;10.0.0.2:11212"}, func(o *Options) {
		o.Inter, o.interSet = "127.0.0.1,::1,controller,10.0.0.1;10.0.0.2:11212", true
		o.Listen = []string{"127.0.0.1", "::1", "controller", "10.0.0.1", "10.0.0.2:11212"}
	}},
	{"C number quirks", []string{"-c", "10x", "-I", "1.5m", "-t", "3x", "-a", "0755", "-b", "-1", "-R", "-1", "-n", "-1", "-f", "1.5x", "-p", "notanumber"}, func(o *Options) {
		o.MaxConns = 10
		o.MaxItemSize = 1024 * 1024
		o.Threads, o.ThreadsSet = 3, true
		o.UnixMask = 0o755
		o.Backlog = -1
		o.ReqsPerEvent = -1
		o.ChunkSize = -1
		o.Factor = 1.5
		o.Port, o.PortSet = 0, true
	}},
	// -m 0 fails the -I check, so C quirks on -m need their own line.
	{"negative memory wraps", []string{"-m", "-5"}, func(o *Options) { o.MemoryMB = -5 }},
	{"item size suffixes", []string{"-I", "2M", "-m", "1024"}, func(o *Options) {
		o.MaxItemSize = 2 << 20
		o.MemoryMB = 1024
	}},
	{"small item size with small chunks", []string{"-I", "2k", "-o", "slab_chunk_max=1024"}, func(o *Options) {
		o.MaxItemSize = 2048
		o.Ext.SlabChunkMax, o.Ext.SlabChunkMaxSet = 1024, true
		o.Ext.Raw = []string{"slab_chunk_max=1024"}
	}},
	{"udp port moves tcp port", []string{"-U", "11300"}, func(o *Options) {
		o.UDPPort, o.UDPPortSet = 11300, true
		o.Port = 11300
	}},
	{"-D", []string{"-D", "/x"}, func(o *Options) { o.PrefixDelimiter, o.DetailEnabled = '/', true }},
	{"protocol and flags", []string{"-B", "ascii", "-A", "-F", "-X", "-W", "-L", "-r", "-Z", "-e", "/dev/shm/m", "-s", "/run/m.sock", "-P", "p"}, func(o *Options) {
		o.Protocol, o.ProtocolSet = ProtoASCII, true
		o.Shutdown, o.NoFlushAll, o.NoDumping, o.NoWatch, o.LargePages, o.Coredumps, o.TLS = true, true, true, true, true, true, true
		o.MemoryFile, o.UnixSocket, o.PidFile = "/dev/shm/m", "/run/m.sock", "p"
	}},
	{"sasl forces binary", []string{"-S"}, func(o *Options) { o.SASL, o.Protocol = true, ProtoBinary }},
	{"auth file forces ascii", []string{"-Y", "/etc/m.auth"}, func(o *Options) { o.AuthFile, o.Protocol = "/etc/m.auth", ProtoASCII }},
	{"high thread warning", []string{"-t", "65", "-N", "2"}, func(o *Options) {
		o.Threads, o.ThreadsSet = 65, true
		o.NAPIIDs = 2
		o.Warnings = []string{"WARNING: Setting a high number of workerthreads is not recommended.\n Set this value to the number of cores in your machine or less."}
	}},
	{"extended", []string{"-o", "idle_timeout=600,hashpower=16,no_lru_crawler,slab_automove=2,hash_algorithm=xxh3,track_sizes,", "--extended=ssl_chain_cert=/c.pem,ssl_key=/k.pem,ssl_ca_cert=/ca.pem,ssl_verify_mode=2,ssl_min_version=3,ssl_wbuf_size=32,ssl_session_cache,ssl_kernel_tls,ssl_ciphers=HIGH,ssl_keyformat=2"}, func(o *Options) {
		e := &o.Ext
		e.IdleTimeout = 600
		e.HashPower = 16
		e.LRUCrawler = false
		e.SlabAutomove = 2
		e.HashAlgorithm = "xxh3"
		e.TrackSizes = true
		e.SSLChainCert, e.SSLKey, e.SSLCACert = "/c.pem", "/k.pem", "/ca.pem"
		e.SSLVerifyMode, e.SSLMinVersion, e.SSLWbufSize = 2, 3, 32*1024
		e.SSLSessionCache, e.SSLKernelTLS, e.SSLCiphers, e.SSLKeyFormat = true, true, "HIGH", 2
		e.Raw = []string{"idle_timeout=600", "hashpower=16", "no_lru_crawler", "slab_automove=2", "hash_algorithm=xxh3", "track_sizes",
			"ssl_chain_cert=/c.pem", "ssl_key=/k.pem", "ssl_ca_cert=/ca.pem", "ssl_verify_mode=2", "ssl_min_version=3", "ssl_wbuf_size=32", "ssl_session_cache", "ssl_kernel_tls", "ssl_ciphers=HIGH", "ssl_keyformat=2"}
	}},
	{"extended lru and logs", []string{"-o", "hot_lru_pct=30,warm_lru_pct=50,hot_max_factor=0.5,warm_max_factor=3,temporary_ttl=30,lru_crawler_sleep=5,lru_crawler_tocrawl=7,watcher_logbuf_size=8,worker_logbuf_size=64,read_buf_mem_limit=2,tail_repair_time=10,slab_automove_ratio=0.5,slab_automove_window=3,sock_cookie_id=7,no_maxconns_fast,no_hashexpand,no_drop_privileges,relaxed_privileges,modern,inline_ascii_resp", "-o", "slab_sizes=100-200-300", "-o", ""}, func(o *Options) {
		e := &o.Ext
		e.HotLRUPct, e.WarmLRUPct, e.HotMaxFactor, e.WarmMaxFactor = 30, 50, 0.5, 3
		e.TempLRU, e.TemporaryTTL = true, 30
		e.LRUCrawlerSleep, e.LRUCrawlerToCrawl = 5, 7
		e.WatcherLogbufSize, e.WorkerLogbufSize, e.ReadBufMemLimit = 8*1024, 64*1024, 2<<20
		e.TailRepairTime, e.SlabAutomoveRatio, e.SlabAutomoveWindow, e.SockCookieID = 10, 0.5, 3, 7
		e.MaxconnsFast, e.NoHashExpand, e.DropPrivileges, e.RelaxedPrivileges = false, true, false, true
		e.SlabSizes, e.SlabSizesSet = "100-200-300", true
		e.Raw = []string{"hot_lru_pct=30", "warm_lru_pct=50", "hot_max_factor=0.5", "warm_max_factor=3", "temporary_ttl=30", "lru_crawler_sleep=5",
			"lru_crawler_tocrawl=7", "watcher_logbuf_size=8", "worker_logbuf_size=64", "read_buf_mem_limit=2", "tail_repair_time=10",
			"slab_automove_ratio=0.5", "slab_automove_window=3", "sock_cookie_id=7", "no_maxconns_fast", "no_hashexpand", "no_drop_privileges",
			"relaxed_privileges", "modern", "inline_ascii_resp", "slab_sizes=100-200-300"}
	}},
	{"no_modern", []string{"-o", "no_modern", "-I", "2m"}, func(o *Options) {
		e := &o.Ext
		e.SlabReassign, e.SlabAutomove, e.MaxconnsFast, e.LRUSegmented, e.LRUCrawler, e.LRUMaintainer = false, 0, false, false, false, false
		e.HashAlgorithm = "jenkins"
		e.SlabChunkMax = 512 * 1024 // -I over 1m resets it
		e.Raw = []string{"no_modern"}
		o.MaxItemSize = 2 << 20
	}},
	{"extstore recorded", []string{"-o", "ext_path=/var/ext:1G,ext_threads=2,ext_max_frag=0.5,ext_drop_unread,slab_automove_freeratio=0.02"}, func(o *Options) {
		o.Ext.ExtStore = map[string]string{"ext_path": "/var/ext:1G", "ext_threads": "2", "ext_max_frag": "0.5", "ext_drop_unread": "", "slab_automove_freeratio": "0.02"}
		o.Ext.Raw = []string{"ext_path=/var/ext:1G", "ext_threads=2", "ext_max_frag=0.5", "ext_drop_unread", "slab_automove_freeratio=0.02"}
	}},
	{"deprecated suboption warns", []string{"-o", "resp_obj_mem_limit=5"}, func(o *Options) {
		o.Ext.Raw = []string{"resp_obj_mem_limit=5"}
		o.Warnings = []string{"DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,"}
	}},
	{"seed sysconfig line", []string{"-p", "11211", "-u", "memcached", "-m", "64", "-c", "1024", "-l", "127.0.0.1,::1,controller"}, func(o *Options) {
		o.PortSet = true
		o.User = "memcached"
		o.Inter, o.interSet, o.Listen = "127.0.0.1,::1,controller", true, []string{"127.0.0.1", "::1", "controller"}
	}},
}

func TestParseValid(t *testing.T) {
	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.args)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.args, err)
			}
			want := Default()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.args, got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate after Parse: %v", err)
			}
		})
	}
}

func TestDefaultIsValid(t *testing.T) {
	o := Default()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.MaxBytes() != 64<<20 || o.BindingProtocol() != "auto-negotiate" {
		t.Fatalf("MaxBytes %d, BindingProtocol %q", o.MaxBytes(), o.BindingProtocol())
	}
	if err := o.CheckPrivileges(0); err == nil || err.Error() != "can't run as root without the -u switch" || err.(*Error).Code != 64 {
		t.Fatalf("CheckPrivileges(0) = %v", err)
	}
	if err := o.CheckPrivileges(1000); err != nil {
		t.Fatal(err)
	}
	o.User = "nobody"
	if err := o.CheckPrivileges(0); err != nil {
		t.Fatal(err)
	}
}

// specialCases: -h, -V and -i win only if reached before a bad option.
var specialCases = []struct {
	args []string
	want error // ErrHelp, ErrVersion, ErrLicense or nil for an *Error
}{
	{[]string{"-h"}, ErrHelp},
	{[]string{"--help"}, ErrHelp},
	{[]string{"-V"}, ErrVersion},
	{[]string{"--vers"}, ErrVersion},
	{[]string{"-i"}, ErrLicense},
	{[]string{"foo", "-V"}, ErrVersion},
	{[]string{"-", "-V"}, ErrVersion},
	{[]string{"-V", "-c", "0"}, ErrVersion},
	{[]string{"-Vh"}, ErrVersion},
	{[]string{"-hV"}, ErrHelp},
	{[]string{"-I", "1", "-h"}, ErrHelp}, // -I is only checked after the loop
	{[]string{"-c", "0", "-V"}, nil},
}

func TestParseSpecial(t *testing.T) {
	for _, tc := range specialCases {
		_, err := Parse(tc.args)
		if tc.want != nil {
			if !errors.Is(err, tc.want) {
				t.Errorf("Parse(%q) = %v, want %v", tc.args, err, tc.want)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q) = %v, want *Error", tc.args, err)
		}
	}
	if !strings.HasPrefix(Usage(), Version+"\n-p, --port=<num>") || !strings.Contains(Usage(), "unix-socket") {
		t.Errorf("Usage() does not look like memcached -h:\n%s", Usage())
	}
	if !strings.HasPrefix(License(), Version+"\n") {
		t.Errorf("License() = %q", License()[:40])
	}
}

// failCase is a command line memcached 1.6.18 refuses; msg and code are
// what memcached prints to stderr and exits with (checked against the
// real binary by TestMustFailMatchesMemcached). warn lists stderr lines
// printed before the error. noReal marks deliberate differences.
type failCase struct {
	args   []string
	msg    string
	code   int
	warn   []string
	noReal string // why the real binary differs
}

const illegal = "\nIllegal argument \"?\""

var mustFail = []failCase{
	// getopt
	{args: []string{"-Q"}, msg: "memcached: invalid option -- 'Q'" + illegal, code: 1},
	{args: []string{"-vq"}, msg: "memcached: invalid option -- 'q'" + illegal, code: 1},
	{args: []string{"-v3"}, msg: "memcached: invalid option -- '3'" + illegal, code: 1},
	{args: []string{"-:"}, msg: "memcached: invalid option -- ':'" + illegal, code: 1},
	{args: []string{"-p"}, msg: "memcached: option requires an argument -- 'p'" + illegal, code: 1},
	{args: []string{"-v", "-o"}, msg: "memcached: option requires an argument -- 'o'" + illegal, code: 1},
	{args: []string{"--bogus"}, msg: "memcached: unrecognized option '--bogus'" + illegal, code: 1},
	{args: []string{"--bogus=1"}, msg: "memcached: unrecognized option '--bogus=1'" + illegal, code: 1},
	{args: []string{"--port"}, msg: "memcached: option '--port' requires an argument" + illegal, code: 1},
	{args: []string{"--po"}, msg: "memcached: option '--port' requires an argument" + illegal, code: 1},
	{args: []string{"--daemon=1"}, msg: "memcached: option '--daemon' doesn't allow an argument" + illegal, code: 1},
	{args: []string{"--help=x"}, msg: "memcached: option '--help' doesn't allow an argument" + illegal, code: 1},
	{args: []string{"--d"}, msg: "memcached: option '--d' is ambiguous; possibilities: '--disable-evictions' '--daemon' '--disable-cas' '--disable-flush-all' '--disable-dumping' '--disable-watch'" + illegal, code: 1},
	{args: []string{"--p=1"}, msg: "memcached: option '--p=1' is ambiguous; possibilities: '--port' '--pidfile' '--protocol'" + illegal, code: 1},
	{args: []string{"--listen-b"}, msg: "memcached: option '--listen-backlog' requires an argument" + illegal, code: 1},
	{args: []string{"---p"}, msg: "memcached: unrecognized option '---p'" + illegal, code: 1},
	{args: []string{"--listen"}, msg: "memcached: option '--listen' requires an argument" + illegal, code: 1},
	{args: []string{"--=x"}, msg: "memcached: option '--=x' is ambiguous; possibilities: '--unix-mask' '--enable-shutdown' '--enable-ssl' '--port' '--unix-socket' '--udp-port' '--memory-limit' '--disable-evictions' '--conn-limit' '--lock-memory' '--help' '--license' '--version' '--enable-coredumps' '--verbose' '--daemon' '--listen' '--user' '--pidfile' '--slab-growth-factor' '--slab-min-size' '--threads' '--enable-largepages' '--max-reqs-per-event' '--disable-cas' '--listen-backlog' '--protocol' '--max-item-size' '--enable-sasl' '--disable-flush-all' '--disable-dumping' '--disable-watch' '--auth-file' '--memory-file' '--extended' '--napi-ids'" + illegal, code: 1},
	{args: []string{"-\xff"}, msg: "memcached: invalid option -- '\xff'" + illegal, code: 1},
	{args: []string{"--napi_ids=1"}, msg: "memcached: unrecognized option '--napi_ids=1'" + illegal, code: 1},
	// per-option checks
	{args: []string{"-c", "0"}, msg: "Maximum connections must be greater than 0", code: 1},
	{args: []string{"-c", "x"}, msg: "Maximum connections must be greater than 0", code: 1},
	{args: []string{"--conn-limit=-1"}, msg: "Maximum connections must be greater than 0", code: 1},
	{args: []string{"-t", "0"}, msg: "Number of threads must be greater than 0", code: 1},
	{args: []string{"-t", "-3"}, msg: "Number of threads must be greater than 0", code: 1},
	{args: []string{"-R", "x"}, msg: "Number of requests per event must be greater than 0", code: 1},
	{args: []string{"-f", "1"}, msg: "Factor must be greater than 1", code: 1},
	{args: []string{"-f", "x"}, msg: "Factor must be greater than 1", code: 1},
	{args: []string{"-n", "0"}, msg: "Chunk size must be greater than 0", code: 1},
	{args: []string{"-D", ""}, msg: "No delimiter specified", code: 1},
	{args: []string{"-N", "0"}, msg: "Maximum number of NAPI IDs must be greater than 0", code: 1},
	{args: []string{"-B", "bogus"}, msg: "Invalid value for binding protocol: bogus\n -- should be one of auto, binary, or ascii", code: 64},
	{args: []string{"--protocol=ASCII"}, msg: "Invalid value for binding protocol: ASCII\n -- should be one of auto, binary, or ascii", code: 64},
	{args: []string{"-t", "65", "-c", "0"}, msg: "Maximum connections must be greater than 0", code: 1,
		warn: []string{"WARNING: Setting a high number of workerthreads is not recommended.", " Set this value to the number of cores in your machine or less."}},
	{args: []string{"-c", "0", "-Q"}, msg: "Maximum connections must be greater than 0", code: 1},
	{args: []string{"-Q", "-c", "0"}, msg: "memcached: invalid option -- 'Q'" + illegal, code: 1},
	// -o
	{args: []string{"-o", "bogus"}, msg: `Illegal suboption "bogus"`, code: 1},
	{args: []string{"-o", "idle_timeout=5,bogus=1,maxconns_fast"}, msg: `Illegal suboption "bogus=1"`, code: 1},
	{args: []string{"-o", ",,"}, msg: `Illegal suboption ""`, code: 1},
	{args: []string{"-o", "=5"}, msg: `Illegal suboption "=5"`, code: 1},
	{args: []string{"-o", "proxy_config=x"}, msg: `Illegal suboption "proxy_config=x"`, code: 1},
	{args: []string{"-o", "ext_bogus"}, msg: `Illegal suboption "ext_bogus"`, code: 1},
	{args: []string{"-o", "idle_timeout"}, msg: "Missing numeric argument for idle_timeout", code: 1},
	{args: []string{"-o", "hashpower"}, msg: "Missing numeric argument for hashpower", code: 1},
	{args: []string{"-o", "hashpower=11"}, msg: "Initial hashtable multiplier of 11 is too low", code: 1},
	{args: []string{"-o", "hashpower=x"}, msg: "Initial hashtable multiplier of 0 is too low", code: 1},
	{args: []string{"-o", "hashpower=33"}, msg: "Initial hashtable multiplier of 33 is too high\nChoose a value based on \"STAT hash_power_level\" from a running instance", code: 1},
	{args: []string{"-o", "slab_automove=3"}, msg: "slab_automove must be between 0 and 2", code: 1},
	{args: []string{"-o", "slab_automove_ratio"}, msg: "Missing slab_automove_ratio argument", code: 1},
	{args: []string{"-o", "slab_automove_ratio=0"}, msg: "slab_automove_ratio must be > 0 and < 1", code: 1},
	{args: []string{"-o", "slab_automove_window=2"}, msg: "slab_automove_window must be > 2", code: 1},
	{args: []string{"-o", "slab_automove_window"}, msg: "Missing slab_automove_window argument", code: 1},
	{args: []string{"-o", "tail_repair_time=5"}, msg: "Cannot set tail_repair_time to less than 10 seconds", code: 1},
	{args: []string{"-o", "tail_repair_time"}, msg: "Missing numeric argument for tail_repair_time", code: 1},
	{args: []string{"-o", "hash_algorithm"}, msg: "Missing hash_algorithm argument", code: 1},
	{args: []string{"-o", "hash_algorithm=md5"}, msg: "Unknown hash_algorithm option (jenkins, murmur3, xxh3)", code: 1},
	{args: []string{"-o", "lru_crawler_sleep=2000000"}, msg: "LRU crawler sleep must be between 0 and 1 second", code: 1},
	{args: []string{"-o", "lru_crawler_sleep"}, msg: "Missing lru_crawler_sleep value", code: 1},
	{args: []string{"-o", "lru_crawler_tocrawl=x"}, msg: "lru_crawler_tocrawl takes a numeric 32bit value", code: 1},
	{args: []string{"-o", "lru_crawler_tocrawl"}, msg: "Missing lru_crawler_tocrawl value", code: 1},
	{args: []string{"-o", "hot_lru_pct=80"}, msg: "hot_lru_pct must be > 1 and < 80", code: 1},
	{args: []string{"-o", "hot_lru_pct"}, msg: "Missing hot_lru_pct argument", code: 1},
	{args: []string{"-o", "warm_lru_pct=0"}, msg: "warm_lru_pct must be > 1 and < 80", code: 1},
	{args: []string{"-o", "hot_max_factor=0"}, msg: "hot_max_factor must be > 0", code: 1},
	{args: []string{"-o", "hot_max_factor"}, msg: "Missing hot_max_factor argument", code: 1},
	{args: []string{"-o", "warm_max_factor=-1"}, msg: "warm_max_factor must be > 0", code: 1},
	{args: []string{"-o", "warm_max_factor"}, msg: "Missing warm_max_factor argument", code: 1},
	{args: []string{"-o", "temporary_ttl"}, msg: "Missing temporary_ttl argument", code: 1},
	{args: []string{"-o", "watcher_logbuf_size=x"}, msg: "could not parse argument to watcher_logbuf_size", code: 1},
	{args: []string{"-o", "watcher_logbuf_size"}, msg: "Missing watcher_logbuf_size argument", code: 1},
	{args: []string{"-o", "worker_logbuf_size=-1"}, msg: "could not parse argument to worker_logbuf_size", code: 1},
	{args: []string{"-o", "worker_logbuf_size"}, msg: "Missing worker_logbuf_size argument", code: 1},
	{args: []string{"-o", "worker_logbuf_size=4"}, msg: "slab size 4 is out of valid range", code: 64}, // 1.6.18 fallthrough bug
	{args: []string{"-o", "read_buf_mem_limit=x"}, msg: "could not parse argument to read_buf_mem_limit", code: 1},
	{args: []string{"-o", "read_buf_mem_limit"}, msg: "Missing read_buf_mem_limit argument", code: 1},
	{args: []string{"-o", "ssl_verify_mode=5"}, msg: "Invalid ssl_verify_mode. Use help to see valid options.", code: 1},
	{args: []string{"-o", "ssl_verify_mode=-1"}, msg: "Invalid ssl_verify_mode. Use help to see valid options.", code: 1},
	{args: []string{"-o", "ssl_verify_mode=x"}, msg: "could not parse argument to ssl_verify_mode", code: 1},
	{args: []string{"-o", "ssl_verify_mode"}, msg: "Missing ssl_verify_mode argument", code: 1},
	{args: []string{"-o", "ssl_min_version=9"}, msg: "Invalid ssl_min_version. Use help to see valid options.", code: 1},
	{args: []string{"-o", "ssl_min_version=x"}, msg: "could not parse argument to ssl_min_version", code: 1},
	{args: []string{"-o", "ssl_keyformat=x"}, msg: "could not parse argument to ssl_keyformat", code: 1},
	{args: []string{"-o", "ssl_keyformat"}, msg: "Missing ssl_keyformat argument", code: 1},
	{args: []string{"-o", "ssl_chain_cert"}, msg: "Missing ssl_chain_cert argument", code: 1},
	{args: []string{"-o", "ssl_key"}, msg: "Missing ssl_key argument", code: 1},
	{args: []string{"-o", "ssl_ca_cert"}, msg: "Missing ssl_ca_cert argument", code: 1},
	{args: []string{"-o", "ssl_ciphers"}, msg: "Missing ssl_ciphers argument", code: 1},
	{args: []string{"-o", "ssl_wbuf_size"}, msg: "Missing ssl_wbuf_size argument", code: 1},
	{args: []string{"-o", "ssl_wbuf_size=-1"}, msg: "could not parse argument to ssl_wbuf_size", code: 1},
	{args: []string{"-o", "ext_path"}, msg: "missing argument to ext_path, ie: ext_path=/d/file:5G", code: 1},
	{args: []string{"-o", "ext_path=x"}, msg: "must supply size to ext_path, ie: ext_path=/f/e:64m (M|G|T|P supported)\nfailed to parse ext_path argument", code: 1},
	{args: []string{"-o", "ext_page_size"}, msg: "Missing ext_page_size argument", code: 1},
	{args: []string{"-o", "ext_threads=x"}, msg: "could not parse argument to ext_threads", code: 1},
	{args: []string{"-o", "ext_item_age=-1"}, msg: "could not parse argument to ext_item_age", code: 1},
	{args: []string{"-o", "ext_max_frag=x"}, msg: "could not parse argument to ext_max_frag", code: 1},
	{args: []string{"-o", "slab_automove_freeratio"}, msg: "Missing slab_automove_freeratio argument", code: 1},
	{args: []string{"-o", "relaxed_privileges", "-c", "0"}, msg: "Maximum connections must be greater than 0", code: 1,
		noReal: "Debian's non-debug build rejects relaxed_privileges; accepted on purpose"},
	{args: []string{"-o", "slab_sizes"}, msg: "Missing slab_sizes argument", code: 1, noReal: "memcached segfaults"},
	{args: []string{"-o", "slab_chunk_max"}, msg: "Missing slab_chunk_max argument", code: 1, noReal: "memcached segfaults"},
	{args: []string{"-o", "sock_cookie_id"}, msg: "Missing sock_cookie_id argument", code: 1, noReal: "memcached segfaults"},
	{args: []string{"-o", "slab_chunk_max=x"}, msg: "slab_chunk_max (bytes: 0) must be greater than 0", code: 64,
		warn: []string{"could not parse argument to slab_chunk_max"}, noReal: "memcached divides by zero (SIGFPE)"},
	// checks after the loop (Validate), in memcached's order
	{args: []string{"-I", "1"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", "1023"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", "1g"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", "2048m", "-m", "8192"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", "0x400"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", ""}, msg: "Item max size cannot be less than 1024 bytes.", code: 64},
	{args: []string{"-I", "1m", "-m", "1"}, msg: "Cannot set item size limit higher than 1/2 of memory max.", code: 64},
	{args: []string{"-I", "513k", "-m", "1"}, msg: "Cannot set item size limit higher than 1/2 of memory max.", code: 64},
	{args: []string{"-m", "0"}, msg: "Cannot set item size limit higher than 1/2 of memory max.", code: 64},
	{args: []string{"-m", "x"}, msg: "Cannot set item size limit higher than 1/2 of memory max.", code: 64},
	{args: []string{"-I", "1025m", "-m", "4096"}, msg: "Cannot set item size limit higher than a gigabyte.", code: 64},
	{args: []string{"-I", "2k", "-m", "1"}, msg: "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 2048)", code: 64},
	{args: []string{"-I", "1024"}, msg: "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 1024)", code: 64},
	{args: []string{"-I", "1000k"}, msg: "-I (item_size_max: 1024000) must be evenly divisible by slab_chunk_max (bytes: 524288)", code: 64},
	{args: []string{"-o", "slab_chunk_max=3"}, msg: "-I (item_size_max: 1048576) must be evenly divisible by slab_chunk_max (bytes: 3)", code: 64},
	{args: []string{"-I", "2m", "-o", "slab_chunk_max=3"}, msg: "-I (item_size_max: 2097152) must be evenly divisible by slab_chunk_max (bytes: 3)", code: 64},
	{args: []string{"-I", "3k", "-o", "slab_chunk_max=3072"}, msg: "slab_chunk_max (bytes: 3072) must divide evenly into 1048576 (slab_page_size)", code: 64},
	{args: []string{"-o", "slab_chunk_max=x", "-I", "1"}, msg: "Item max size cannot be less than 1024 bytes.", code: 64, warn: []string{"could not parse argument to slab_chunk_max"}},
	{args: []string{"-o", "slab_sizes=x"}, msg: "slab size 0 is out of valid range", code: 64},
	{args: []string{"-o", "slab_sizes=100-50"}, msg: "slab size 50 cannot be lower than or equal to a previous class size", code: 64},
	{args: []string{"-o", "slab_sizes=100-104"}, msg: "slab size 104 must be at least 8 bytes larger than previous class", code: 64},
	{args: []string{"-o", "slab_sizes=2000000"}, msg: "slab size 2000000 is out of valid range", code: 64},
	{args: []string{"-o", "slab_sizes="}, msg: "", code: 64},
	{args: []string{"-o", "slab_sizes=x,slab_chunk_max=3"}, msg: "-I (item_size_max: 1048576) must be evenly divisible by slab_chunk_max (bytes: 3)", code: 64},
	{args: []string{"-o", "hot_lru_pct=50,warm_lru_pct=40"}, msg: "hot_lru_pct + warm_lru_pct cannot be more than 80% combined", code: 64},
	{args: []string{"-o", "temporary_ttl=x,no_lru_maintainer"}, msg: "temporary_ttl requires lru_maintainer to be enabled", code: 64},
	{args: []string{"-o", "temporary_ttl=1,no_modern"}, msg: "temporary_ttl requires lru_maintainer to be enabled", code: 64},
	{args: []string{"-N", "5"}, msg: "Number of napi_ids(5) cannot be greater than number of threads(4)", code: 64},
	{args: []string{"-N", "5", "-I", "1"}, msg: "Number of napi_ids(5) cannot be greater than number of threads(4)", code: 64},
	{args: []string{"-S", "-B", "ascii"}, msg: "ERROR: You cannot allow the ASCII protocol while using SASL.", code: 64},
	{args: []string{"-S", "-B", "auto"}, msg: "ERROR: You cannot allow the ASCII protocol while using SASL.", code: 64},
	{args: []string{"-S", "-U", "5"}, msg: "ERROR: Cannot enable UDP while using binary SASL authentication.", code: 64},
	{args: []string{"-Y", "/nonexistent", "-B", "binary"}, msg: "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.", code: 64},
	{args: []string{"-Y", "/nonexistent", "-U", "5", "-p", "1"}, msg: "Cannot use UDP with ascii authentication enabled (-U 0 to disable)", code: 64},
	{args: []string{"-p", "70000"}, msg: "ERROR: Invalid port number 70000.", code: 64},
	{args: []string{"-p", "65536", "-Z"}, msg: "ERROR: Invalid port number 65536.", code: 64},
	{args: []string{"-U", "70000"}, msg: "ERROR: Invalid port number 70000.", code: 64},
	{args: []string{"-p", "70000", "-S", "-B", "ascii"}, msg: "ERROR: You cannot allow the ASCII protocol while using SASL.", code: 64},
	{args: []string{"-Z", "-p", "0"}, msg: "ERROR: You cannot enable SSL without a TCP port.", code: 64},
	{args: []string{"-Z", "-p", "0", "-U", "5"}, msg: "ERROR: You cannot enable SSL without a TCP port.", code: 64},
}

func TestParseMustFail(t *testing.T) {
	for _, tc := range mustFail {
		_, err := Parse(tc.args)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q) = %v, want *Error", tc.args, err)
			continue
		}
		if e.Msg != tc.msg || e.Code != tc.code {
			t.Errorf("Parse(%q) = %q exit %d, want %q exit %d", tc.args, e.Msg, e.Code, tc.msg, tc.code)
		}
	}
}

// ourStderr is what `substrate memcached` prints for a parse: warnings,
// then the error message.
func ourStderr(args []string) (stderr string, code int) {
	o, err := Parse(args)
	var lines []string
	for _, w := range o.Warnings {
		lines = append(lines, w)
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Msg != "" {
			lines = append(lines, e.Msg)
		}
		code = e.Code
	}
	if len(lines) == 0 {
		return "", code
	}
	return strings.Join(lines, "\n") + "\n", code
}

func FuzzParse(f *testing.F) {
	for _, tc := range validCases {
		f.Add(strings.Join(tc.args, "\x00"))
	}
	for _, tc := range mustFail {
		f.Add(strings.Join(tc.args, "\x00"))
	}
	for _, tc := range specialCases {
		f.Add(strings.Join(tc.args, "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		o, err := Parse(args)
		var e *Error
		switch {
		case err == nil:
			if verr := o.Validate(); verr != nil {
				t.Fatalf("Parse(%q) accepted options Validate rejects: %v", args, verr)
			}
			// ListenAddrs must not panic either.
			_, _ = o.ListenAddrs()
		case errors.Is(err, ErrHelp), errors.Is(err, ErrVersion), errors.Is(err, ErrLicense):
		case errors.As(err, &e):
			if e.Code != ExitFailure && e.Code != ExitUsage {
				t.Fatalf("Parse(%q): exit code %d", args, e.Code)
			}
			if e.Msg == "" && !strings.Contains(s, "slab_sizes") {
				t.Fatalf("Parse(%q): empty message", args)
			}
		default:
			t.Fatalf("Parse(%q): unexpected error type %T", args, err)
		}
	})
}
