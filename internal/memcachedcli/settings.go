package memcachedcli

import "fmt"

// StatsSettings returns the `stats settings` lines (name to value) of
// memcached 1.6.18 that these options determine, as memcached prints
// them. Lines that depend on the running process or its build
// (num_threads_per_udp and the like) are not included.
func (o Options) StatsSettings() map[string]string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	inter := o.Inter
	if !o.interSet {
		inter = "NULL"
	}
	evictions := "on"
	if o.NoEvict {
		evictions = "off"
	}
	sock := o.UnixSocket
	if sock == "" {
		sock = "NULL"
	}
	e := o.Ext
	return map[string]string{
		"maxbytes": fmt.Sprint(o.MaxBytes()), "maxconns": fmt.Sprint(o.MaxConns),
		"tcpport": fmt.Sprint(o.Port), "udpport": fmt.Sprint(o.UDPPort), "inter": inter,
		"verbosity": fmt.Sprint(o.Verbosity), "evictions": evictions, "domain_socket": sock,
		"umask": fmt.Sprintf("%o", o.UnixMask), "shutdown_command": yes(o.Shutdown),
		"growth_factor": fmt.Sprintf("%.2f", o.Factor), "chunk_size": fmt.Sprint(o.ChunkSize),
		"num_threads": fmt.Sprint(o.Threads), "stat_key_prefix": string(o.PrefixDelimiter),
		"detail_enabled": yes(o.DetailEnabled), "reqs_per_event": fmt.Sprint(o.ReqsPerEvent),
		"cas_enabled": yes(!o.DisableCAS), "tcp_backlog": fmt.Sprint(o.Backlog),
		"binding_protocol": o.BindingProtocol(), "auth_enabled_sasl": yes(o.SASL),
		"item_size_max": fmt.Sprint(o.MaxItemSize), "maxconns_fast": yes(e.MaxconnsFast),
		"hashpower_init": fmt.Sprint(e.HashPower), "slab_reassign": yes(e.SlabReassign),
		"slab_automove": fmt.Sprint(e.SlabAutomove), "slab_automove_ratio": fmt.Sprintf("%.2f", e.SlabAutomoveRatio),
		"slab_automove_window": fmt.Sprint(e.SlabAutomoveWindow), "slab_chunk_max": fmt.Sprint(e.SlabChunkMax),
		"lru_crawler": yes(e.LRUCrawler), "lru_crawler_sleep": fmt.Sprint(e.LRUCrawlerSleep),
		"lru_crawler_tocrawl": fmt.Sprint(e.LRUCrawlerToCrawl), "tail_repair_time": fmt.Sprint(e.TailRepairTime),
		"flush_enabled": yes(!o.NoFlushAll), "dump_enabled": yes(!o.NoDumping),
		"hash_algorithm": e.HashAlgorithm, "lru_maintainer_thread": yes(e.LRUMaintainer),
		"lru_segmented": yes(e.LRUSegmented), "hot_lru_pct": fmt.Sprint(e.HotLRUPct),
		"warm_lru_pct": fmt.Sprint(e.WarmLRUPct), "hot_max_factor": fmt.Sprintf("%.2f", e.HotMaxFactor),
		"warm_max_factor": fmt.Sprintf("%.2f", e.WarmMaxFactor), "temp_lru": yes(e.TempLRU),
		"temporary_ttl": fmt.Sprint(e.TemporaryTTL), "idle_timeout": fmt.Sprint(e.IdleTimeout),
		"watcher_logbuf_size": fmt.Sprint(e.WatcherLogbufSize), "worker_logbuf_size": fmt.Sprint(e.WorkerLogbufSize),
		"read_buf_mem_limit": fmt.Sprint(e.ReadBufMemLimit), "track_sizes": yes(e.TrackSizes),
		"inline_ascii_response": "no", "ssl_enabled": yes(o.TLS),
		"ssl_verify_mode": fmt.Sprint([]int{0, 1, 3, 7}[e.SSLVerifyMode]), "ssl_keyformat": fmt.Sprint(e.SSLKeyFormat),
		"ssl_wbuf_size":  fmt.Sprint(e.SSLWbufSize),
		"ssl_chain_cert": orNull(e.SSLChainCert, "(null)"), "ssl_key": orNull(e.SSLKey, "(null)"),
		"ssl_ca_cert": orNull(e.SSLCACert, "NULL"), "ssl_ciphers": orNull(e.SSLCiphers, "NULL"),
		"ssl_min_version": []string{"tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3"}[e.SSLMinVersion],
	}
}

// orNull is how memcached prints an unset string setting.
func orNull(v, null string) string {
	if v == "" {
		return null
	}
	return v
}
