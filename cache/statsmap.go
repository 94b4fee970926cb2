package cache

import (
	"bytes"
	"fmt"
)

// StatsGroup returns what the text protocol's "stats GROUP" answers ("" for
// plain "stats"; "settings", "items" or "slabs"), as a map of the STAT
// lines' names to values: the input of memcached_exporter's metrics,
// read in process (internal/metrics) without a connection, so that SASL,
// TLS or a unix socket do not stand between the exporter and the cache.
func (s *Server) StatsGroup(group string) (map[string]string, error) {
	var w statWriter
	switch group {
	case "":
		s.generalStats(&w)
	case "settings":
		s.settingsStats(&w)
	case "items":
		s.itemStats(&w)
	case "slabs":
		s.slabStats(&w)
	default:
		return nil, fmt.Errorf("memcached: stats %q: no such group", group)
	}
	out := map[string]string{}
	for line := range bytes.Lines(w.b) {
		line = bytes.TrimSuffix(line, []byte("\r\n"))
		rest, ok := bytes.CutPrefix(line, []byte("STAT "))
		if !ok {
			continue
		}
		if k, v, ok := bytes.Cut(rest, []byte(" ")); ok {
			out[string(k)] = string(v)
		}
	}
	return out, nil
}
