package cache

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// serverStats are the connection-level counters; item counters live in
// the store's shards. All fields are atomics, updated by connection
// goroutines and read by "stats".
type serverStats struct {
	totalConns    atomic.Uint64
	rejectedConns atomic.Uint64
	cmdGet        atomic.Uint64
	cmdSet        atomic.Uint64
	cmdFlush      atomic.Uint64
	cmdTouch      atomic.Uint64
	cmdMeta       atomic.Uint64
	getHits       atomic.Uint64
	getMisses     atomic.Uint64
	deleteHits    atomic.Uint64
	deleteMisses  atomic.Uint64
	incrHits      atomic.Uint64
	incrMisses    atomic.Uint64
	decrHits      atomic.Uint64
	decrMisses    atomic.Uint64
	casHits       atomic.Uint64
	casMisses     atomic.Uint64
	casBadval     atomic.Uint64
	touchHits     atomic.Uint64
	touchMisses   atomic.Uint64
	storeTooLarge atomic.Uint64
	storeNoMemory atomic.Uint64
	bytesRead     atomic.Uint64
	bytesWritten  atomic.Uint64
	authCmds      atomic.Uint64
	authErrors    atomic.Uint64
}

func (st *serverStats) arith(incr, hit bool) {
	switch {
	case incr && hit:
		st.incrHits.Add(1)
	case incr:
		st.incrMisses.Add(1)
	case hit:
		st.decrHits.Add(1)
	default:
		st.decrMisses.Add(1)
	}
}

// counters lists every counter of st.
func (st *serverStats) counters() []*atomic.Uint64 {
	return []*atomic.Uint64{&st.totalConns, &st.rejectedConns, &st.cmdGet, &st.cmdSet,
		&st.cmdFlush, &st.cmdTouch, &st.cmdMeta, &st.getHits, &st.getMisses, &st.deleteHits,
		&st.deleteMisses, &st.incrHits, &st.incrMisses, &st.decrHits, &st.decrMisses, &st.casHits,
		&st.casMisses, &st.casBadval, &st.touchHits, &st.touchMisses, &st.storeTooLarge,
		&st.storeNoMemory, &st.bytesRead, &st.bytesWritten, &st.authCmds, &st.authErrors}
}

func (st *serverStats) reset() {
	for _, a := range st.counters() {
		a.Store(0)
	}
}

// Per-loop counters: as memcached keeps statistics per worker thread,
// each event loop counts its connections' requests in a serverStats of its
// own (loop.stats), and Server.stats counts the rest (accepts, goroutine-
// served connections, UDP). With one shared set the loops, on different
// CPUs, each wrote the cache lines the others had just written, several
// times a request. The "stats" commands add them up (statsSum), "stats
// reset" clears them all (resetStats).

// statsSum adds up the server's and every loop's counters.
func (s *Server) statsSum() *serverStats {
	sum := new(serverStats)
	dst := sum.counters()
	add := func(st *serverStats) {
		for i, a := range st.counters() {
			dst[i].Add(a.Load())
		}
	}
	add(&s.stats)
	for _, l := range s.loopList() {
		add(&l.stats)
	}
	return sum
}

// resetStats is "stats reset" for the server's counters ("stats reset"
// also clears the store's).
func (s *Server) resetStats() {
	s.stats.reset()
	for _, l := range s.loopList() {
		l.stats.reset()
	}
}

// loopList is the event loops (fixed once Start has started them).
func (s *Server) loopList() []*loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loops
}

type statWriter struct {
	b []byte
}

func (w *statWriter) str(k, v string) {
	w.b = append(w.b, "STAT "...)
	w.b = append(w.b, k...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, v...)
	w.b = append(w.b, '\r', '\n')
}

func (w *statWriter) u(k string, v uint64) { w.str(k, strconv.FormatUint(v, 10)) }
func (w *statWriter) i(k string, v int64)  { w.str(k, strconv.FormatInt(v, 10)) }

func onOff(b bool, on, off string) string {
	if b {
		return on
	}
	return off
}

func (c *conn) statsCmd(cmd *Command) bool {
	s := c.s
	var w statWriter
	if len(cmd.Args) == 0 {
		s.generalStats(&w)
	} else {
		switch string(cmd.Args[0]) {
		case "reset":
			s.resetStats()
			s.store.resetStats()
			c.line("RESET")
			return false
		case "detail":
			if len(cmd.Args) < 2 {
				c.line(ErrStatsDetail.Reply)
				return false
			}
			switch string(cmd.Args[1]) {
			case "on", "off":
				c.line("OK")
			case "dump":
				c.line("END")
			default:
				c.line(ErrStatsDetail.Reply)
			}
			return false
		case "settings":
			s.settingsStats(&w)
		case "conns":
			s.connStats(&w)
		case "sizes":
			w.str("sizes_status", "disabled")
		case "cachedump":
			if !s.cfg.NoDumping {
				c.line("ERROR") // not implemented
				return false
			}
			c.line("CLIENT_ERROR stats cachedump not allowed")
			return false
		case "items":
			s.itemStats(&w)
		case "slabs":
			s.slabStats(&w)
		default:
			c.line("ERROR")
			return false
		}
	}
	w.b = append(w.b, "END\r\n"...)
	c.w.Write(w.b)
	return false
}

func rusage() (user, sys string) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return "0.000000", "0.000000"
	}
	f := func(tv syscall.Timeval) string {
		us := strconv.FormatInt(int64(tv.Usec), 10)
		for len(us) < 6 {
			us = "0" + us
		}
		return strconv.FormatInt(int64(tv.Sec), 10) + "." + us
	}
	return f(ru.Utime), f(ru.Stime)
}

func (s *Server) counts() (curr, listeners int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns), len(s.listeners)
}

// generalStats emits the 83 keys of memcached 1.6.18's "stats", in its
// order. Keys describing memcached internals we do not have (slab
// reassignment, the LRU crawler, libevent, log watchers) are reported as 0.
func (s *Server) generalStats(w *statWriter) {
	st := s.statsSum()
	t := s.store.totals()
	now := s.clk.now()
	curr, nl := s.counts()
	user, sys := rusage()
	w.i("pid", int64(os.Getpid()))
	w.u("uptime", uint64(now-itemUpdateInterval))
	w.i("time", s.clk.startUnix+int64(now))
	w.str("version", version)
	w.str("libevent", runtime.Version())
	w.i("pointer_size", 64)
	w.str("rusage_user", user)
	w.str("rusage_system", sys)
	w.i("max_connections", int64(s.cfg.MaxConns))
	w.i("curr_connections", int64(curr))
	w.u("total_connections", st.totalConns.Load()+uint64(nl))
	w.u("rejected_connections", st.rejectedConns.Load())
	w.i("connection_structures", int64(curr+nl))
	w.u("response_obj_oom", 0)
	w.u("response_obj_count", 0)
	w.u("response_obj_bytes", 0)
	w.i("read_buf_count", int64(curr))
	w.i("read_buf_bytes", int64(curr*readBufSize))
	w.u("read_buf_bytes_free", 0)
	w.u("read_buf_oom", 0)
	w.u("reserved_fds", 0)
	w.u("cmd_get", st.cmdGet.Load())
	w.u("cmd_set", st.cmdSet.Load())
	w.u("cmd_flush", st.cmdFlush.Load())
	w.u("cmd_touch", st.cmdTouch.Load())
	w.u("cmd_meta", st.cmdMeta.Load())
	w.u("get_hits", st.getHits.Load())
	w.u("get_misses", st.getMisses.Load())
	w.u("get_expired", t.getExpired)
	w.u("get_flushed", t.getFlushed)
	w.u("delete_misses", st.deleteMisses.Load())
	w.u("delete_hits", st.deleteHits.Load())
	w.u("incr_misses", st.incrMisses.Load())
	w.u("incr_hits", st.incrHits.Load())
	w.u("decr_misses", st.decrMisses.Load())
	w.u("decr_hits", st.decrHits.Load())
	w.u("cas_misses", st.casMisses.Load())
	w.u("cas_hits", st.casHits.Load())
	w.u("cas_badval", st.casBadval.Load())
	w.u("touch_hits", st.touchHits.Load())
	w.u("touch_misses", st.touchMisses.Load())
	w.u("store_too_large", st.storeTooLarge.Load())
	w.u("store_no_memory", st.storeNoMemory.Load())
	w.u("auth_cmds", st.authCmds.Load())
	w.u("auth_errors", st.authErrors.Load())
	w.u("bytes_read", st.bytesRead.Load())
	w.u("bytes_written", st.bytesWritten.Load())
	w.i("limit_maxbytes", s.store.limit.Load())
	w.u("accepting_conns", 1)
	w.u("listen_disabled_num", 0)
	w.u("time_in_listen_disabled_us", 0)
	w.str("threads", s.threadCount())
	w.u("conn_yields", 0)
	hp := uint(16)
	for uint64(1)<<hp*3/2 < t.currItems {
		hp++
	}
	w.u("hash_power_level", uint64(hp))
	w.u("hash_bytes", 8<<hp)
	w.u("hash_is_expanding", 0)
	for _, k := range []string{"slab_reassign_rescues", "slab_reassign_chunk_rescues",
		"slab_reassign_evictions_nomem", "slab_reassign_inline_reclaim", "slab_reassign_busy_items",
		"slab_reassign_busy_deletes", "slab_reassign_running", "slabs_moved", "lru_crawler_running",
		"lru_crawler_starts", "lru_maintainer_juggles", "malloc_fails", "log_worker_dropped",
		"log_worker_written", "log_watcher_skipped", "log_watcher_sent", "log_watchers"} {
		w.u(k, 0)
	}
	if ts := s.tls; ts != nil {
		if ts.cfg.SessionCache {
			w.u("ssl_new_sessions", ts.newSessions.Load())
		}
		w.u("ssl_handshake_errors", ts.handshakeErrors.Load())
		w.i("time_since_server_cert_refresh", time.Now().Unix()-ts.refreshedAt.Load())
	}
	w.u("unexpected_napi_ids", 0)
	w.u("round_robin_fallback", 0)
	w.i("bytes", t.bytes)
	w.u("curr_items", t.currItems)
	w.u("total_items", t.totalItems)
	w.u("slab_global_page_pool", 0)
	w.u("expired_unfetched", t.expiredUnfetched)
	w.u("evicted_unfetched", t.evictedUnfetched)
	w.u("evicted_active", 0)
	w.u("evictions", t.evictions)
	w.u("reclaimed", t.reclaimed)
	for _, k := range []string{"crawler_reclaimed", "crawler_items_checked", "lrutail_reflocked",
		"moves_to_cold", "moves_to_warm", "moves_within_lru", "direct_reclaims", "lru_bumps_dropped"} {
		w.u(k, 0)
	}
}

func (s *Server) settingsStats(w *statWriter) {
	port, inter := "0", "NULL"
	if addrs := s.Addrs(); len(addrs) > 0 {
		if h, p, err := net.SplitHostPort(addrs[0].String()); err == nil {
			port, inter = p, h
		}
	}
	threads := s.threadCount()
	w.i("maxbytes", s.store.limit.Load())
	w.i("maxconns", int64(s.cfg.MaxConns))
	w.str("tcpport", port)
	udpPort := "0"
	if ua := s.UDPAddrs(); len(ua) > 0 {
		if _, p, err := net.SplitHostPort(ua[0].String()); err == nil {
			udpPort = p
		}
	}
	w.str("udpport", udpPort)
	w.str("inter", inter)
	w.u("verbosity", uint64(s.verbosity.Load()))
	w.u("oldest", 0)
	w.str("evictions", onOff(!s.cfg.NoEvict, "on", "off"))
	w.str("domain_socket", onOff(s.cfg.UnixSocket != "", s.cfg.UnixSocket, "NULL"))
	w.str("umask", strconv.FormatUint(uint64(s.cfg.UnixMask&os.ModePerm), 8))
	w.str("shutdown_command", onOff(s.cfg.OnShutdown != nil, "yes", "no"))
	w.str("growth_factor", "1.25")
	w.str("chunk_size", "48")
	w.str("num_threads", threads)
	w.str("num_threads_per_udp", threads)
	w.str("stat_key_prefix", ":")
	w.str("detail_enabled", "no")
	w.str("reqs_per_event", "20")
	w.str("cas_enabled", onOff(!s.cfg.NoCAS, "yes", "no"))
	w.i("tcp_backlog", int64(s.cfg.Backlog))
	w.str("binding_protocol", s.bindingProtocol())
	w.str("auth_enabled_sasl", onOff(s.cfg.SASL, "yes", "no"))
	w.str("auth_enabled_ascii", "no")
	w.i("item_size_max", int64(s.cfg.MaxItemSize))
	w.str("maxconns_fast", "yes")
	w.str("hashpower_init", "0")
	w.str("slab_reassign", "yes")
	w.str("slab_automove", "1")
	w.str("slab_automove_ratio", "0.80")
	w.str("slab_automove_window", "30")
	w.str("slab_chunk_max", "524288")
	w.str("lru_crawler", "yes")
	w.str("lru_crawler_sleep", "100")
	w.str("lru_crawler_tocrawl", "0")
	w.str("tail_repair_time", "0")
	w.str("flush_enabled", onOff(!s.cfg.NoFlushAll, "yes", "no"))
	w.str("dump_enabled", onOff(!s.cfg.NoDumping, "yes", "no"))
	w.str("hash_algorithm", "murmur3")
	w.str("lru_maintainer_thread", "yes")
	w.str("lru_segmented", "yes")
	w.str("hot_lru_pct", "20")
	w.str("warm_lru_pct", "40")
	w.str("hot_max_factor", "0.20")
	w.str("warm_max_factor", "2.00")
	w.str("temp_lru", "no")
	w.str("temporary_ttl", "61")
	w.str("idle_timeout", "0")
	w.str("watcher_logbuf_size", "262144")
	w.str("worker_logbuf_size", "65536")
	w.str("read_buf_mem_limit", "0")
	w.str("track_sizes", "no")
	w.str("inline_ascii_response", "no")
	w.str("ext_item_size", "512")
	w.str("ext_item_age", "4294967295")
	w.str("ext_low_ttl", "0")
	w.str("ext_recache_rate", "2000")
	w.str("ext_wbuf_size", "4194304")
	w.str("ext_compact_under", "0")
	w.str("ext_drop_under", "0")
	w.str("ext_max_sleep", "1000000")
	w.str("ext_max_frag", "0.80")
	w.str("slab_automove_freeratio", "0.010")
	w.str("ext_drop_unread", "no")
	tc := s.cfg.TLS
	if tc == nil {
		tc = s.cfg.TLSSettings
	}
	if tc == nil {
		tc = NewTLSConfig("", "")
	}
	orNull := func(v, null string) string { return onOff(v != "", v, null) }
	w.str("ssl_enabled", onOff(s.cfg.TLS != nil, "yes", "no"))
	w.str("ssl_chain_cert", orNull(tc.ChainCert, "(null)"))
	w.str("ssl_key", orNull(tc.Key, "(null)"))
	// memcached shows the OpenSSL flags: PEER 1, FAIL_IF_NO_PEER_CERT 2,
	// CLIENT_ONCE 4.
	w.i("ssl_verify_mode", int64([]int{0, 1, 3, 7}[min(max(tc.VerifyMode, 0), 3)]))
	w.i("ssl_keyformat", int64(tc.KeyFormat))
	w.str("ssl_ciphers", orNull(tc.Ciphers, "NULL"))
	w.str("ssl_ca_cert", orNull(tc.CACert, "NULL"))
	w.i("ssl_wbuf_size", int64(tc.WbufSize))
	w.str("ssl_session_cache", onOff(tc.SessionCache, "yes", "no"))
	w.str("ssl_kernel_tls", onOff(tc.KernelTLS, "yes", "no"))
	w.str("ssl_min_version", []string{"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}[min(max(tc.MinVersion, 0), 3)])
	w.str("num_napi_ids", "(null)")
	w.str("memory_file", "(null)")
}

func (s *Server) connStats(w *statWriter) {
	now := s.clk.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	id := 0
	for _, l := range s.listeners {
		p := strconv.Itoa(id) + ":"
		w.str(p+"addr", l.Addr().Network()+":"+l.Addr().String())
		w.str(p+"state", "conn_listening")
		w.u(p+"secs_since_last_cmd", 0)
		id++
	}
	for c := range s.conns {
		p := strconv.Itoa(id) + ":"
		if c.listen.Network() == "unix" {
			w.str(p+"addr", "unix:"+c.listen.String())
		} else {
			w.str(p+"addr", "tcp:"+c.remote())
		}
		w.str(p+"listen_addr", c.listen.Network()+":"+c.listen.String())
		w.str(p+"state", "conn_parse_cmd")
		w.u(p+"secs_since_last_cmd", uint64(now-c.lastCmd.Load()))
		id++
	}
}

// slabClasses are memcached 1.6.18's default chunk sizes (-n 48, -f 1.25,
// slab_chunk_max 512 KiB); class ids start at 1.
var slabClasses = func() []int {
	sizes := []int{0}
	size := 96
	for len(sizes) < 63 && float64(size) < 524288/1.25 {
		if size%8 != 0 {
			size += 8 - size%8
		}
		sizes = append(sizes, size)
		size = int(float64(size) * 1.25)
	}
	return append(sizes, 524288)
}()

func slabClass(total int64) int {
	for i := 1; i < len(slabClasses); i++ {
		if int64(slabClasses[i]) >= total {
			return i
		}
	}
	return len(slabClasses) - 1
}

type classInfo struct {
	number, requested uint64
	oldest            uint32
}

func (s *Server) scanClasses() map[int]*classInfo {
	out := map[int]*classInfo{}
	for i := range s.store.shards {
		sh := &s.store.shards[i]
		sh.mu.Lock()
		for idx := sh.head; idx != nilSlot; idx = sh.at(idx).next {
			it := sh.at(idx)
			tot := s.store.size(it)
			cl := slabClass(tot)
			ci := out[cl]
			if ci == nil {
				ci = &classInfo{oldest: it.time}
				out[cl] = ci
			}
			ci.number++
			ci.requested += uint64(tot)
			ci.oldest = min(ci.oldest, it.time)
		}
		sh.mu.Unlock()
	}
	return out
}

// itemStats is "stats items": per-class counts computed by a scan. We
// keep no per-class eviction history, so those counters read 0.
func (s *Server) itemStats(w *statWriter) {
	now := s.clk.now()
	classes := s.scanClasses()
	for cl := 1; cl < len(slabClasses); cl++ {
		ci := classes[cl]
		if ci == nil {
			continue
		}
		p := "items:" + strconv.Itoa(cl) + ":"
		w.u(p+"number", ci.number)
		w.u(p+"number_hot", 0)
		w.u(p+"number_warm", 0)
		w.u(p+"number_cold", ci.number)
		w.u(p+"age_hot", 0)
		w.u(p+"age_warm", 0)
		w.u(p+"age", uint64(now-ci.oldest))
		w.u(p+"mem_requested", ci.requested)
		for _, k := range []string{"evicted", "evicted_nonzero", "evicted_time", "outofmemory",
			"tailrepairs", "reclaimed", "expired_unfetched", "evicted_unfetched", "evicted_active",
			"crawler_reclaimed", "crawler_items_checked", "lrutail_reflocked", "moves_to_cold",
			"moves_to_warm", "moves_within_lru", "direct_reclaims", "hits_to_hot", "hits_to_warm",
			"hits_to_cold", "hits_to_temp"} {
			w.u(p+k, 0)
		}
	}
}

// slabStats is "stats slabs", computed from the same scan as if every
// class held just enough 1 MiB pages.
func (s *Server) slabStats(w *statWriter) {
	classes := s.scanClasses()
	active := 0
	var malloced uint64
	for cl := 1; cl < len(slabClasses); cl++ {
		ci := classes[cl]
		if ci == nil {
			continue
		}
		active++
		size := uint64(slabClasses[cl])
		per := uint64(1<<20) / size
		pages := (ci.number + per - 1) / per
		p := strconv.Itoa(cl) + ":"
		w.u(p+"chunk_size", size)
		w.u(p+"chunks_per_page", per)
		w.u(p+"total_pages", pages)
		w.u(p+"total_chunks", pages*per)
		w.u(p+"used_chunks", ci.number)
		w.u(p+"free_chunks", pages*per-ci.number)
		w.u(p+"free_chunks_end", 0)
		for _, k := range []string{"get_hits", "cmd_set", "delete_hits", "incr_hits", "decr_hits",
			"cas_hits", "cas_badval", "touch_hits"} {
			w.u(p+k, 0)
		}
		malloced += pages << 20
	}
	w.i("active_slabs", int64(active))
	w.u("total_malloced", malloced)
}

// threadCount is what the stats report as the number of worker threads.
func (s *Server) threadCount() string {
	if s.cfg.Threads > 0 {
		return strconv.Itoa(s.cfg.Threads)
	}
	return strconv.Itoa(runtime.GOMAXPROCS(0))
}
