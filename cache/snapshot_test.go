package cache

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestStatsMatchesStatsCommand: Server.Stats reads the same figures a
// client's "stats" prints, after traffic that moves each of them.
func TestStatsMatchesStatsCommand(t *testing.T) {
	cfg := NewConfig()
	cfg.Addrs = []string{"127.0.0.1:0"}
	cfg.MemoryLimit = 4 << 20
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	c := dial(t, s.Addrs()[0].String())
	for i := range 80 { // 8 MB into 4 MB: evictions
		if got := c.roundTrip(setCmd("k"+strconv.Itoa(i), 0, 0, 100<<10)); got != "STORED\r\n" {
			t.Fatalf("set: %q", got)
		}
	}
	c.roundTrip("get k79\r\n")
	c.roundTrip("get nope\r\n")
	st := s.Stats()
	m := c.stats("")
	for k, v := range map[string]int64{
		"curr_items": int64(st.CurrItems), "total_items": int64(st.TotalItems), "bytes": st.Bytes,
		"limit_maxbytes": st.LimitMaxBytes, "evictions": int64(st.Evictions), "get_hits": int64(st.GetHits),
		"get_misses": int64(st.GetMisses), "cmd_get": int64(st.CmdGet), "cmd_set": int64(st.CmdSet),
		"curr_connections": int64(st.CurrConnections), "max_connections": int64(st.MaxConnections),
	} {
		if got := c.statInt(m, k); got != v {
			t.Errorf("%s: stats says %d, Stats() %d", k, got, v)
		}
	}
	if st.Evictions == 0 || st.GetHits != 1 || st.GetMisses != 1 || st.CmdSet != 80 || st.LimitMaxBytes != 4<<20 {
		t.Errorf("Stats() = %+v", st)
	}
}
