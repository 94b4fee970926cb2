package cache

// Stats is a snapshot of the figures of "stats" that the web UI shows,
// read in process: the same values a client's "stats" would print at
// that moment.
type Stats struct {
	CurrItems       uint64 // curr_items
	TotalItems      uint64 // total_items
	Bytes           int64  // bytes
	LimitMaxBytes   int64  // limit_maxbytes
	Evictions       uint64 // evictions
	Reclaimed       uint64 // reclaimed
	GetHits         uint64 // get_hits
	GetMisses       uint64 // get_misses
	GetExpired      uint64 // get_expired
	CmdGet          uint64 // cmd_get
	CmdSet          uint64 // cmd_set
	CurrConnections int    // curr_connections
	MaxConnections  int    // max_connections
	TotalConns      uint64 // total_connections
	RejectedConns   uint64 // rejected_connections
	BytesRead       uint64 // bytes_read
	BytesWritten    uint64 // bytes_written
	Uptime          uint64 // uptime, seconds
}

// Stats reads the counters; it is safe at any time, also before Start.
func (s *Server) Stats() Stats {
	st := s.statsSum()
	t := s.store.totals()
	curr, nl := s.counts()
	return Stats{
		CurrItems:       t.currItems,
		TotalItems:      t.totalItems,
		Bytes:           t.bytes,
		LimitMaxBytes:   s.store.limit.Load(),
		Evictions:       t.evictions,
		Reclaimed:       t.reclaimed,
		GetHits:         st.getHits.Load(),
		GetMisses:       st.getMisses.Load(),
		GetExpired:      t.getExpired,
		CmdGet:          st.cmdGet.Load(),
		CmdSet:          st.cmdSet.Load(),
		CurrConnections: curr,
		MaxConnections:  s.cfg.MaxConns,
		TotalConns:      st.totalConns.Load() + uint64(nl),
		RejectedConns:   st.rejectedConns.Load(),
		BytesRead:       st.bytesRead.Load(),
		BytesWritten:    st.bytesWritten.Load(),
		Uptime:          uint64(s.clk.now() - itemUpdateInterval),
	}
}
