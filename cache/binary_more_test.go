package cache

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBinaryNoEvict: a full -M cache answers binary stores with ENOMEM
// and memcached's text, and a failed set drops the old value.
func TestBinaryNoEvict(t *testing.T) {
	forEachTarget(t, serverOpts{memMB: 2, noEvict: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.binRoundTrip(binReq(BinSet, "keep", setExtras(0, 0), "x", 0, 0))
		val := strings.Repeat("v", 100)
		var req strings.Builder
		for i := range 30000 {
			req.WriteString(binReq(BinSetQ, "ne"+strconv.Itoa(i), setExtras(0, 0), val, uint32(i), 0))
		}
		out := parseBinResps(t, c.binRoundTrip(req.String()))
		if len(out) == 0 || out[0].status != BinStatusOutOfMemory || out[0].value != "Out of memory allocating item" || out[0].op != BinSetQ {
			t.Fatalf("first reply %v of %d", out[:min(1, len(out))], len(out))
		}
		got := c.binRoundTrip(binReq(BinSet, "keep", setExtras(0, 0), strings.Repeat("b", 120), 1, 0) + binReq(BinGet, "keep", "", "", 2, 0))
		want := binRes(BinSet, BinStatusOutOfMemory, "", "", "Out of memory allocating item", 1, 0) + binErr(BinGet, BinStatusKeyNotFound, 2)
		if got != want {
			t.Errorf("overwrite when full: %v", parseBinResps(t, got))
		}
		if st := dial(t, addr).stats(""); st["store_no_memory"] != "0" {
			t.Errorf("store_no_memory %s: memcached counts it only for text", st["store_no_memory"])
		}
	})
}

// TestBinaryStatNames: binary STAT returns the same statistics, in the
// same order, as the text stats command.
func TestBinaryStatNames(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.roundTrip("set a 0 0 1\r\nx\r\n")
		for _, group := range []string{"", "settings", "items", "slabs"} {
			var text []string
			for _, l := range strings.Split(c.roundTrip(strings.TrimSpace("stats "+group)+"\r\n"), "\r\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "STAT" {
					text = append(text, f[1])
				}
			}
			b := dial(t, addr)
			resps := parseBinResps(t, b.binRoundTrip(binReq(BinStat, group, "", "", 5, 0)))
			var bin []string
			for i, r := range resps {
				if r.op != BinStat || r.opaque != 5 || r.status != 0 || r.cas != 0 || r.extras != "" {
					t.Errorf("%q: bad response %v", group, r)
				}
				if i == len(resps)-1 {
					if r.key != "" || r.value != "" {
						t.Errorf("%q: last response %v", group, r)
					}
					break
				}
				bin = append(bin, r.key)
			}
			if strings.Join(text, " ") != strings.Join(bin, " ") {
				t.Errorf("stats %q:\ntext   %v\nbinary %v", group, text, bin)
			}
		}
	})
}

// TestBinaryHugeKeyCloses: a header, extras and key beyond memcached's
// 16 KiB read buffer close the connection without a reply (a reset,
// since the rest is unread).
func TestBinaryHugeKeyCloses(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.send(binReq(BinGet, strings.Repeat("k", 20000), "", "", 2, 0))
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c.r)
		if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("got %q, %v", b, err)
		}
	})
}

// TestBinaryCounters: the statistics binary commands update, as memcached
// counts them.
func TestBinaryCounters(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.binRoundTrip(binReq(BinSet, "k", setExtras(0, 0), "v", 0, 0) +
			binReq(BinGet, "k", "", "", 0, 0) + binReq(BinGet, "nope", "", "", 0, 0) + binReq(BinGetKQ, "nope", "", "", 0, 0) +
			binReq(BinTouch, "k", u32(100), "", 0, 0) + binReq(BinTouch, "nope", u32(100), "", 0, 0) + binReq(BinGAT, "k", u32(0), "", 0, 0) +
			binReq(BinDelete, "k", "", "", 0, 0) + binReq(BinDelete, "k", "", "", 0, 0) +
			binReq(BinIncrement, "n", arithExtras(1, 10, 0), "", 0, 0) + binReq(BinIncrement, "n", arithExtras(1, 0, 0), "", 0, 0) +
			binReq(BinIncrement, "m", arithExtras(1, 0, binNoCreate), "", 0, 0) + binReq(BinDecrement, "n", arithExtras(1, 0, 0), "", 0, 0) +
			binReq(BinSet, "k2", setExtras(0, 0), "v", 0, 99) + binReq(BinSet, "k3", setExtras(0, 0), "v", 0, 0) +
			binReq(BinSet, "k3", setExtras(0, 0), "v", 0, 99) + binReq(BinFlush, "", "", "", 0, 0))
		st := dial(t, addr).stats("")
		want := map[string]string{"cmd_get": "3", "get_hits": "1", "get_misses": "2", "cmd_touch": "3", "touch_hits": "2",
			"touch_misses": "1", "delete_hits": "1", "delete_misses": "1", "incr_hits": "1", "incr_misses": "1", "decr_hits": "1",
			"decr_misses": "0", "cas_misses": "1", "cas_badval": "1", "cas_hits": "0", "cmd_set": "4", "cmd_flush": "1",
			"total_items": "3"}
		for k, v := range want {
			if st[k] != v {
				t.Errorf("%s = %s, want %s", k, st[k], v)
			}
		}
	})
}
