package cache

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// transcripts are request/reply pairs checked byte for byte. Each runs on
// a fresh connection with its own keys; every one also runs against
// Debian's memcached 1.6.18 (see forEachTarget).
var transcripts = []struct {
	name, req, want string
}{
	{"set get", "set t1 5 0 3\r\nabc\r\nget t1\r\n", "STORED\r\nVALUE t1 5 3\r\nabc\r\nEND\r\n"},
	{"bare LF", "set t2 0 0 1\nx\r\nget t2\n", "STORED\r\nVALUE t2 0 1\r\nx\r\nEND\r\n"},
	{"trailing space (python-memcached)", "set t3 16 0 1 \r\nx\r\ndelete t3 \r\nget t3 \r\n", "STORED\r\nDELETED\r\nEND\r\n"},
	{"extra spaces", "  set   t4  0 0   2  \r\nhi\r\n get  t4 \r\n", "STORED\r\nVALUE t4 0 2\r\nhi\r\nEND\r\n"},
	{"multi get repeat miss", "set t5a 0 0 1\r\na\r\nset t5b 0 0 1\r\nb\r\nget t5a nope t5b t5a\r\n",
		"STORED\r\nSTORED\r\nVALUE t5a 0 1\r\na\r\nVALUE t5b 0 1\r\nb\r\nVALUE t5a 0 1\r\na\r\nEND\r\n"},
	{"bget", "set t6 0 0 1\r\na\r\nbget t6\r\n", "STORED\r\nVALUE t6 0 1\r\na\r\nEND\r\n"},
	{"empty value", "set t7 0 0 0\r\n\r\nget t7\r\n", "STORED\r\nVALUE t7 0 0\r\n\r\nEND\r\n"},
	{"flags max", "set t8 4294967295 0 1\r\nx\r\nget t8\r\n", "STORED\r\nVALUE t8 4294967295 1\r\nx\r\nEND\r\n"},
	{"flags wrap", "set t9 4294967296 0 1\r\nx\r\nget t9\r\n", "STORED\r\nVALUE t9 0 1\r\nx\r\nEND\r\n"},
	{"flags negative", "set t10 -1 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n"},
	{"add replace", "add t11 0 0 1\r\na\r\nadd t11 0 0 1\r\nb\r\nreplace t11 0 0 1\r\nc\r\nreplace t11x 0 0 1\r\nd\r\nget t11\r\n",
		"STORED\r\nNOT_STORED\r\nSTORED\r\nNOT_STORED\r\nVALUE t11 0 1\r\nc\r\nEND\r\n"},
	{"append prepend keep flags", "set t12 7 0 2\r\nbb\r\nappend t12 9 0 1\r\nc\r\nprepend t12 9 0 1\r\na\r\nappend t12x 0 0 1\r\na\r\nget t12\r\n",
		"STORED\r\nSTORED\r\nSTORED\r\nNOT_STORED\r\nVALUE t12 7 4\r\nabbc\r\nEND\r\n"},
	{"cas missing", "cas t13 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n"},
	{"cas zero mismatch", "set t14 0 0 1\r\nx\r\ncas t14 0 0 1 0\r\ny\r\n", "STORED\r\nEXISTS\r\n"},
	{"cas no token", "cas t15 0 0 1\r\nx\r\n", "ERROR\r\nERROR\r\n"},
	{"bad data chunk", "set t16 0 0 1\r\nxy\r\nget t16\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n"},
	{"bad length", "set t17 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n"},
	{"length int max", "set t18 0 0 2147483647\r\n", "CLIENT_ERROR bad command line format\r\n"},
	{"length wraps", "set t19 0 0 4294967295\r\n", "CLIENT_ERROR bad command line format\r\n"},
	{"non numeric exptime", "set t20 0 x 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n"},
	{"bogus noreply token", "set t21 0 0 1 bogus\r\nx\r\n", "STORED\r\n"},
	{"too many tokens", "set t22 0 0 1 noreply extra\r\nx\r\n", "ERROR\r\nERROR\r\n"},
	{"few tokens", "set t23 0 0\r\n", "ERROR\r\n"},
	{"key 250", "set " + strings.Repeat("k", 250) + " 0 0 1\r\nx\r\n", "STORED\r\n"},
	{"key 251", "set " + strings.Repeat("k", 251) + " 0 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n"},
	{"get key 251", "get t24 " + strings.Repeat("k", 251) + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
	{"control bytes in key", "set t25\tx\x01 0 0 1\r\nx\r\nget t25\tx\x01\r\n", "STORED\r\nVALUE t25\tx\x01 0 1\r\nx\r\nEND\r\n"},
	{"unknown", "bogus\r\n", "ERROR\r\n"},
	{"uppercase", "GET x\r\n", "ERROR\r\n"},
	{"empty line", "\r\n", "ERROR\r\n"},
	{"one char", "g\r\n", "ERROR\r\n"},
	{"get no key", "get\r\n", "ERROR\r\n"},
	{"gets no key", "gets\r\n", "ERROR\r\n"},
	{"gat no key", "gat 10\r\n", "END\r\n"},
	{"gat bad exptime", "gat x k\r\n", "CLIENT_ERROR invalid exptime argument\r\n"},
	{"gat", "set t26 3 0 1\r\nx\r\ngat 100 t26 nope\r\n", "STORED\r\nVALUE t26 3 1\r\nx\r\nEND\r\n"},
	{"delete", "set t27 0 0 1\r\nx\r\ndelete t27\r\ndelete t27\r\n", "STORED\r\nDELETED\r\nNOT_FOUND\r\n"},
	{"delete zero", "delete t28 0\r\ndelete t28 0 noreply\r\n", "NOT_FOUND\r\n"},
	{"delete time", "delete t29 5\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"},
	{"delete no key", "delete\r\n", "ERROR\r\n"},
	{"delete too many", "delete a b c d e\r\n", "ERROR\r\n"},
	{"incr", "set t30 0 0 2\r\n10\r\nincr t30 5\r\ndecr t30 100\r\nincr t30 18446744073709551615\r\nincr nope 1\r\n",
		"STORED\r\n15\r\n0\r\n18446744073709551615\r\nNOT_FOUND\r\n"},
	{"incr wrap", "set t31 0 0 20\r\n18446744073709551615\r\nincr t31 1\r\n", "STORED\r\n0\r\n"},
	{"decr pads", "set t32 0 0 2\r\n10\r\ndecr t32 1\r\nget t32\r\n", "STORED\r\n9\r\nVALUE t32 0 2\r\n9 \r\nEND\r\n"},
	{"incr grows", "set t33 0 0 1\r\n9\r\nincr t33 1\r\nget t33\r\n", "STORED\r\n10\r\nVALUE t33 0 2\r\n10\r\nEND\r\n"},
	{"incr strtoull", "set t34 0 0 2\r\n+5\r\nincr t34 1\r\nset t35 0 0 2\r\n\t7\r\nincr t35 1\r\n", "STORED\r\n6\r\nSTORED\r\n8\r\n"},
	{"incr non numeric", "set t36 0 0 2\r\nhi\r\nincr t36 1\r\nset t37 0 0 2\r\n-1\r\nincr t37 1\r\nset t38 0 0 0\r\n\r\nincr t38 1\r\n",
		"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nSTORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"},
	{"incr bad delta", "incr t39 -1\r\nincr t39 x\r\nincr t39 18446744073709551616\r\n",
		"CLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\nCLIENT_ERROR invalid numeric delta argument\r\n"},
	{"incr no delta", "incr t40\r\n", "ERROR\r\n"},
	{"touch", "set t41 0 0 1\r\nx\r\ntouch t41 100\r\ntouch nope 1\r\ntouch t41 x\r\ntouch t41\r\n",
		"STORED\r\nTOUCHED\r\nNOT_FOUND\r\nCLIENT_ERROR invalid exptime argument\r\nERROR\r\n"},
	{"noreply everything", "set t42 0 0 1 noreply\r\nx\r\nadd t42 0 0 1 noreply\r\nx\r\nincr t42 1 noreply\r\ntouch t42 x noreply\r\n" +
		"delete t42 5 noreply\r\nset t42 0 0 2000000 noreply\r\n" + strings.Repeat("z", 2000000) + "\r\nset t42 0 0 1 noreply\r\nxy\r\nflush_all x noreply\r\nverbosity x noreply\r\nget t42\r\n",
		// The bad data chunk consumes "xy\r"; the lone "\n" is an empty line.
		"ERROR\r\nEND\r\n"},
	{"noreply malformed leaks data line", "set t43 0 0 x noreply\r\nab\r\n", "ERROR\r\n"},
	{"too large deletes set", "set t44 0 0 1\r\nx\r\nset t44 0 0 1048577\r\n" + strings.Repeat("z", 1048577) + "\r\nget t44\r\n",
		"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n"},
	{"too large keeps on add", "set t45 0 0 1\r\nx\r\nadd t45 0 0 1048577\r\n" + strings.Repeat("z", 1048577) + "\r\nget t45\r\n",
		"STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE t45 0 1\r\nx\r\nEND\r\n"},
	{"max item exact", "set u1 0 0 1048515\r\n" + strings.Repeat("z", 1048515) + "\r\nset u2 0 0 1048516\r\n" + strings.Repeat("z", 1048516) + "\r\n",
		"STORED\r\nSERVER_ERROR object too large for cache\r\n"},
	{"max item flags", "set w 1 0 1048512\r\n" + strings.Repeat("z", 1048512) + "\r\nset w 1 0 1048513\r\n" + strings.Repeat("z", 1048513) + "\r\n",
		"STORED\r\nSERVER_ERROR object too large for cache\r\n"},
	{"append over max", "set t48 0 0 1048000\r\n" + strings.Repeat("z", 1048000) + "\r\nappend t48 0 0 1000\r\n" + strings.Repeat("y", 1000) + "\r\n",
		"STORED\r\nNOT_STORED\r\n"},
	{"negative exptime", "set t49 0 -1 1\r\nx\r\nget t49\r\n", "STORED\r\nEND\r\n"},
	{"past absolute exptime", "set t50 0 2592001 1\r\nx\r\nget t50\r\n", "STORED\r\nEND\r\n"},
	{"future absolute exptime", "set t51 0 " + strconv.FormatInt(time.Now().Unix()+3600, 10) + " 1\r\nx\r\nget t51\r\n", "STORED\r\nVALUE t51 0 1\r\nx\r\nEND\r\n"},
	{"gat -1 expires", "set t52 0 0 1\r\nx\r\ngat -1 t52\r\nget t52\r\n", "STORED\r\nVALUE t52 0 1\r\nx\r\nEND\r\nEND\r\n"},
	{"version", "version\r\nversion extra\r\n", "VERSION 1.6.18\r\nVERSION 1.6.18\r\n"},
	{"verbosity", "verbosity 1\r\nverbosity\r\nverbosity x\r\nverbosity 1 noreply\r\n", "OK\r\nERROR\r\nCLIENT_ERROR bad command line format\r\n"},
	{"flush_all args", "flush_all x\r\nflush_all 1 2\r\nflush_all 1 2 3\r\nflush_all -1\r\n",
		"CLIENT_ERROR invalid exptime argument\r\nOK\r\nERROR\r\nOK\r\n"},
	{"stats unknown", "stats bogus\r\n", "ERROR\r\n"},
	{"stats reset", "stats reset\r\n", "RESET\r\n"},
	{"stats sizes", "stats sizes\r\n", "STAT sizes_status disabled\r\nEND\r\n"},
	{"stats detail", "stats detail\r\nstats detail on\r\nstats detail off\r\n", "CLIENT_ERROR usage: stats detail on|off|dump\r\nOK\r\nOK\r\n"},
	{"shutdown", "shutdown\r\n", "ERROR: shutdown not enabled\r\n"},
	{"slabs automove", "slabs automove invalid\r\nslabs automove 1\r\nslabs automove 3\r\n", "CLIENT_ERROR bad command line format\r\nOK\r\nERROR\r\n"},
	// Other reassign answers depend on memcached's slab page state.
	{"slabs reassign", "slabs reassign 100 2\r\nslabs reassign 2 2\r\nslabs reassign x 1\r\n",
		"BADCLASS invalid src or dst class id\r\nSAME src and dst class are identical\r\nCLIENT_ERROR bad command line format\r\n"},
	{"cache_memlimit", "cache_memlimit 4\r\ncache_memlimit x\r\n", "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\nERROR\r\n"},
	{"nul truncates line", "set t53 0 0 1\r\nx\r\nget t53\x00junk\r\n", "STORED\r\nVALUE t53 0 1\r\nx\r\nEND\r\n"},
	{"many keys", "set t54 0 0 1\r\nx\r\nget" + strings.Repeat(" t54", 60) + "\r\n", "STORED\r\n" + strings.Repeat("VALUE t54 0 1\r\nx\r\n", 60) + "END\r\n"},
	{"huge multi-get line", "set t56 0 0 1\r\nx\r\nget" + strings.Repeat(" t56", 5000) + "\r\n", "STORED\r\n" + strings.Repeat("VALUE t56 0 1\r\nx\r\n", 5000) + "END\r\n"},
	{"gat many keys", "set t55 0 0 1\r\nx\r\ngat 0" + strings.Repeat(" t55", 30) + "\r\n", "STORED\r\n" + strings.Repeat("VALUE t55 0 1\r\nx\r\n", 30) + "END\r\n"},

	// Meta protocol.
	{"mn with arguments", "mn extra\r\n", ""}, // its MN ends the round trip
	{"mg alone", "mg\r\n", "ERROR\r\n"},
	{"unknown meta", "mx k\r\n", "ERROR\r\n"},
	{"ms mg", "ms m1 2 T0 F5\r\nhi\r\nmg m1 v f t s k O99 q\r\nmg m1\r\nmg nope v\r\nmg nope v q k\r\nmg nope k O1\r\n",
		"HD\r\nVA 2 f5 t-1 s2 km1 O99\r\nhi\r\nHD\r\nEN\r\nEN km1 O1\r\n"[:0] + "HD\r\nVA 2 f5 t-1 s2 km1 O99\r\nhi\r\nHD\r\nEN\r\nEN knope O1\r\n"},
	{"ms quiet", "ms m2 1 q\r\nx\r\nms m2 1 q ME\r\nx\r\n", "NS\r\n"},
	{"ms modes", "ms m3 1 MR\r\nx\r\nms m3 1 ME\r\na\r\nms m3 1 MA\r\nb\r\nms m3 1 MP\r\nc\r\nms m3 1 MS\r\nd\r\nmg m3 v\r\nms m3 1 MX\r\nx\r\n",
		"NS\r\nHD\r\nHD\r\nHD\r\nHD\r\nVA 1\r\nd\r\nCLIENT_ERROR invalid mode for ms M token\r\n"},
	{"ms errors", "ms m4\r\nms m4 S2\r\nms m4 1 Z\r\nx\r\nms m4 1 T1 T2\r\nx\r\nms m4 1 Mxx\r\nx\r\n",
		"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR incorrect length for M token\r\n"},
	{"ms bad chunk", "ms m5 1 q\r\nxy\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n"},
	{"ms too large", "ms m6 1048577\r\n" + strings.Repeat("z", 1048577) + "\r\n", "SERVER_ERROR object too large for cache\r\n"},
	{"mg errors", "mg k F\r\nmg k v v\r\nmg k Q\r\nmg k Ox23456789012345678901234567890123\r\nmg k T\r\n",
		"CLIENT_ERROR bad command line format\r\nCLIENT_ERROR duplicate flag\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR opaque token too long\r\nCLIENT_ERROR bad token in command line format\r\n"},
	{"meta too many flags", "mg k" + strings.Repeat(" a", 18) + "\r\nmd k" + strings.Repeat(" a", 18) + "\r\nms k 1" + strings.Repeat(" a", 17) + "\r\nx\r\n",
		"CLIENT_ERROR options flags are too long\r\nCLIENT_ERROR options flags too long\r\nCLIENT_ERROR options flags too long\r\nERROR\r\n"},
	{"base64 key", "ms bTc= 2 b k\r\nhi\r\nmg bTc= b k v\r\nmg m7 v k\r\nms k 1 b\r\nx\r\n",
		"HD kbTc= b\r\nVA 2 kbTc= b\r\nhi\r\nVA 2 kbTc= b\r\nhi\r\nCLIENT_ERROR error decoding key\r\n"},
	{"md", "ms m8 1\r\nx\r\nmd m8 q\r\nmd m8\r\nmd m8 q O5 k\r\nmd m8 x\r\n", "HD\r\nNF\r\nNF O5 km8\r\nCLIENT_ERROR invalid or duplicate flag\r\n"},
	{"ma", "ma m9\r\nma m9 N0 J10 v\r\nma m9 v\r\nma m9 MD D20 v\r\nma m9 q\r\nma m9 v t\r\nms m10 1\r\nx\r\nma m10\r\nma m9 MX\r\nma m9 Dx\r\n",
		"NF\r\nVA 2\r\n10\r\nVA 2\r\n11\r\nVA 1\r\n0\r\nVA 1 t-1\r\n2\r\nHD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid or duplicate flag\r\n"[:0] +
			"NF\r\nVA 2\r\n10\r\nVA 2\r\n11\r\nVA 1\r\n0\r\nVA 1 t-1\r\n2\r\nHD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\nCLIENT_ERROR invalid mode for ma M token\r\nCLIENT_ERROR invalid or duplicate flag\r\n"},
	{"vivify and stale", "mg m11 N30 s\r\nmg m11 s\r\nms m11 1 T60\r\nx\r\nmd m11 I T30\r\nmg m11 v\r\nmg m11 v\r\n",
		"HD s0 W\r\nHD s0 Z\r\nHD\r\nHD\r\nVA 1 X W\r\nx\r\nVA 1 Z X\r\nx\r\n"},
	{"recache win", "ms m12 1 T10\r\nx\r\nmg m12 R30\r\nmg m12 R30\r\nmg m12 R5\r\n", "HD\r\nHD W\r\nHD Z\r\nHD Z\r\n"},
	{"me", "me nope\r\nme\r\n", "EN\r\nCLIENT_ERROR bad command line format\r\n"},
	{"stale set", "ms m14 1 T100\r\nx\r\nms m14 1 C1 I\r\ny\r\nmg m14 v s\r\nmg m14 v\r\nmd m14 C1\r\nmg m14 t T1 t\r\n",
		"HD\r\nHD\r\nVA 1 s1 X W\r\ny\r\nVA 1 Z X\r\ny\r\nEX\r\nCLIENT_ERROR duplicate flag\r\n"},
	{"ma quiet", "ma m15 N0 J5 q\r\nma m15 q v\r\nma m15 v q O9 k\r\nmg m15 v\r\n", "HD\r\nVA 1\r\n7\r\n"},
	{"mg hit flag", "ms m13 1\r\nx\r\nmg m13 h\r\nmg m13 h\r\nmg m13 h u\r\n", "HD\r\nHD h0\r\nHD h1\r\nHD h1\r\n"},
}

func TestTranscripts(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		for _, tc := range transcripts {
			c := dial(t, addr)
			if got := c.roundTrip(tc.req); got != tc.want {
				t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
			}
			c.nc.Close()
		}
	})
}

// TestReplyWithCAS checks the CAS rules: gets shows it, every store changes
// it, touch and gat keep it, and cas succeeds only with the current value.
func TestReplyWithCAS(t *testing.T) {
	re := regexp.MustCompile(`^VALUE c1 0 1 (\d+)\r\nx\r\nEND\r\n$`)
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		casOf := func() string {
			t.Helper()
			out := c.roundTrip("gets c1\r\n")
			m := re.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("gets: %q", out)
			}
			return m[1]
		}
		c.roundTrip("set c1 0 0 1\r\nx\r\n")
		a := casOf()
		if got := c.roundTrip("touch c1 100\r\ngat 100 c1\r\n"); got != "TOUCHED\r\nVALUE c1 0 1\r\nx\r\nEND\r\n" {
			t.Fatalf("touch/gat: %q", got)
		}
		if b := casOf(); b != a {
			t.Errorf("touch/gat changed cas %s -> %s", a, b)
		}
		if got := c.roundTrip("gats 100 c1\r\n"); got != "VALUE c1 0 1 "+a+"\r\nx\r\nEND\r\n" {
			t.Errorf("gats: %q", got)
		}
		if got := c.roundTrip("cas c1 0 0 1 " + a + "\r\nx\r\ncas c1 0 0 1 " + a + "\r\nx\r\n"); got != "STORED\r\nEXISTS\r\n" {
			t.Errorf("cas: %q", got)
		}
		b := casOf()
		if b == a {
			t.Errorf("cas store kept cas %s", a)
		}
		c.roundTrip("append c1 0 0 0\r\n\r\n")
		if d := casOf(); d == b {
			t.Errorf("append kept cas %s", b)
		}
		out := c.roundTrip("mg c1 c\r\n")
		if !strings.HasPrefix(out, "HD c") {
			t.Errorf("mg c: %q", out)
		}
	})
}

func TestStatsCounters(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		before := c.stats("")
		c.roundTrip("set s1 0 0 1\r\n1\r\nget s1 s2\r\ngat 10 s1 s2\r\ntouch s1 10\r\nincr s1 1\r\nincr s2 1\r\ndecr s1 1\r\n" +
			"delete s2\r\ncas s1 0 0 1 1\r\nx\r\ncas s2 0 0 1 1\r\nx\r\nset s3 0 0 2000000\r\n" + strings.Repeat("z", 2000000) + "\r\n" +
			"flush_all\r\nget s1\r\nset s4 0 -1 1\r\nx\r\nget s4\r\nmg s5 v\r\nme s5\r\n")
		after := c.stats("")
		want := map[string]int64{
			"cmd_get": 5, "get_hits": 1, "get_misses": 4, "cmd_touch": 3, "touch_hits": 2, "touch_misses": 1,
			"incr_hits": 1, "incr_misses": 1, "decr_hits": 1, "delete_misses": 1, "cas_badval": 1, "cas_misses": 1,
			"cmd_set": 4, "store_too_large": 1, "cmd_flush": 1, "get_expired": 1, "get_flushed": 1, "cmd_meta": 1,
		}
		// total_items is not asserted: memcached's incr sometimes copies
		// the item instead of editing in place (when its LRU thread holds a
		// reference), which counts an extra item.
		for k, v := range want {
			if d := c.statInt(after, k) - c.statInt(before, k); d != v {
				t.Errorf("%s: delta %d, want %d", k, d, v)
			}
		}
		if after["version"] != "1.6.18" {
			t.Errorf("version %q", after["version"])
		}
		if c.statInt(after, "limit_maxbytes") != 64<<20 {
			t.Errorf("limit_maxbytes %s", after["limit_maxbytes"])
		}
		set := c.stats("settings")
		for k, v := range map[string]string{"maxbytes": "67108864", "maxconns": "1024", "item_size_max": "1048576",
			"evictions": "on", "cas_enabled": "yes", "tcp_backlog": "1024"} {
			if set[k] != v {
				t.Errorf("settings %s = %q, want %q", k, set[k], v)
			}
		}
	})
}

// TestStatsKeysOrder compares the names and order of the keys of stats,
// stats settings, stats items and stats slabs with memcached's.
func TestStatsKeysOrder(t *testing.T) {
	subs := []string{"", "settings", "items", "slabs", "conns"}
	var names [2][]string
	i := 0
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.roundTrip("set a 0 0 1\r\nx\r\n")
		for _, sub := range subs {
			cmd := "stats"
			if sub != "" {
				cmd += " " + sub
			}
			var keys []string
			for _, l := range strings.Split(c.roundTrip(cmd+"\r\n"), "\r\n") {
				if f := strings.Fields(l); len(f) == 3 {
					// Connection ids are file descriptors in memcached.
					if sub == "conns" {
						f[1] = f[1][strings.IndexByte(f[1], ':'):]
					}
					keys = append(keys, f[1])
				}
			}
			names[i] = append(names[i], sub+": "+strings.Join(keys, " "))
		}
		i++
	})
	if i == 2 {
		for j := range subs {
			if names[0][j] != names[1][j] {
				t.Errorf("keys differ:\n ours %v\n real %v", names[0][j], names[1][j])
			}
		}
	}
}

func TestBytesStat(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		// 48 header + 8 cas + key + 1 + value + 2, and 4 for non-zero flags.
		c.roundTrip("set b 0 0 1\r\nx\r\nset c 1 0 1\r\nx\r\n")
		if got := c.statInt(c.stats(""), "bytes"); got != 61+65 {
			t.Errorf("bytes = %d, want 126", got)
		}
	})
}

func TestQuitAnswersFirst(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.send("set q1 0 0 1\r\nx\r\nget q1\r\nquit\r\nget q1\r\n")
		if got := c.expectEOF(); got != "STORED\r\nVALUE q1 0 1\r\nx\r\nEND\r\n" {
			t.Errorf("got %q", got)
		}
	})
}

func TestConnectionClosers(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.send("version\r\nGET / HTTP/1.1\r\nversion\r\n")
		// memcached drops the queued VERSION reply too.
		if got := c.expectEOF(); got != "" {
			t.Errorf("http guard: %q", got)
		}
		c = dial(t, addr)
		c.send(strings.Repeat("x", 3000))
		if got := c.expectEOF(); got != "" {
			t.Errorf("junk line: %q", got)
		}
		// A long multi-get split over several writes is allowed.
		c = dial(t, addr)
		c.send("get" + strings.Repeat(" nokey", 600))
		time.Sleep(50 * time.Millisecond)
		if got := c.roundTrip(" nokey\r\n"); got != "END\r\n" {
			t.Errorf("long get: %q", got)
		}
	})
}

func TestTooManyConnections(t *testing.T) {
	addr := startOurs(t, serverOpts{conns: 2})
	a, b := dial(t, addr), dial(t, addr)
	a.roundTrip("version\r\n")
	b.roundTrip("version\r\n")
	c := dial(t, addr)
	if got := c.expectEOF(); got != "ERROR Too many open connections\r\n" {
		t.Errorf("got %q", got)
	}
	st := a.stats("")
	if st["rejected_connections"] != "1" || st["curr_connections"] != "2" {
		t.Errorf("rejected %s curr %s", st["rejected_connections"], st["curr_connections"])
	}
}

func TestPipelinedBatch(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		var req, want strings.Builder
		for i := range 200 {
			k := "p" + strconv.Itoa(i)
			req.WriteString("set " + k + " 0 0 1 noreply\r\nx\r\nget " + k + "\r\n")
			want.WriteString("VALUE " + k + " 0 1\r\nx\r\nEND\r\n")
		}
		if got := c.roundTrip(req.String()); got != want.String() {
			t.Errorf("pipeline mismatch: %d vs %d bytes", len(got), len(want.String()))
		}
	})
}

func TestExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps")
	}
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.roundTrip("set e1 0 1 1\r\nx\r\nset e2 0 100 1\r\nx\r\nset e3 0 1 1\r\nx\r\ntouch e3 100\r\nflush_all 2\r\n")
		time.Sleep(2100 * time.Millisecond)
		if got := c.roundTrip("get e1 e2 e3\r\n"); got != "END\r\n" {
			t.Errorf("after expiry and delayed flush: %q", got)
		}
		c.roundTrip("set e4 0 0 1\r\nx\r\n")
		time.Sleep(1100 * time.Millisecond)
		if got := c.roundTrip("get e4\r\n"); got != "VALUE e4 0 1\r\nx\r\nEND\r\n" {
			t.Errorf("set after flush: %q", got)
		}
	})
}

// TestEviction fills a 2 MB cache with more than it holds: every write
// succeeds, the newest keys survive and the oldest are evicted.
func TestEviction(t *testing.T) {
	forEachTarget(t, serverOpts{memMB: 2}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		const n = 30000
		val := strings.Repeat("v", 100)
		var req strings.Builder
		for i := range n {
			req.WriteString("set ev" + strconv.Itoa(i) + " 0 0 100 noreply\r\n" + val + "\r\n")
			if req.Len() > 256<<10 {
				if got := c.roundTrip(req.String()); got != "" {
					t.Fatalf("set replies: %q", got[:min(len(got), 200)])
				}
				req.Reset()
			}
		}
		if got := c.roundTrip(req.String()); got != "" {
			t.Fatalf("set replies: %q", got)
		}
		present := func(from, to int) int {
			var q strings.Builder
			q.WriteString("get")
			for i := from; i < to; i++ {
				q.WriteString(" ev" + strconv.Itoa(i))
			}
			return strings.Count(c.roundTrip(q.String()+"\r\n"), "VALUE ")
		}
		if got := present(0, 1000); got != 0 {
			t.Errorf("%d of the oldest 1000 keys survived", got)
		}
		if got := present(n-1000, n); got != 1000 {
			t.Errorf("only %d of the newest 1000 keys present", got)
		}
		st := c.stats("")
		if ev := c.statInt(st, "evictions"); ev < n/2 {
			t.Errorf("evictions = %d", ev)
		}
		if b := c.statInt(st, "bytes"); b > 2<<20 {
			t.Errorf("bytes %d over the limit", b)
		}
	})
}

// TestNoEvict fills a -M cache: writes fail with memcached's error, and a
// failed set deletes the old value.
func TestNoEvict(t *testing.T) {
	forEachTarget(t, serverOpts{memMB: 2, noEvict: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.roundTrip("set keep 0 0 1\r\nx\r\n")
		val := strings.Repeat("v", 100)
		var req strings.Builder
		for i := range 30000 {
			req.WriteString("set ne" + strconv.Itoa(i) + " 0 0 100\r\n" + val + "\r\n")
		}
		out := c.roundTrip(req.String())
		if !strings.Contains(out, "SERVER_ERROR out of memory storing object\r\n") {
			t.Fatalf("no OOM error in %d bytes of replies", len(out))
		}
		// Same slab class as the fill items: memcached lets a new class take
		// one page even when full.
		big := strings.Repeat("b", 120)
		if got := c.roundTrip("set keep 0 0 120\r\n" + big + "\r\nget keep\r\n"); got != "SERVER_ERROR out of memory storing object\r\nEND\r\n" {
			t.Errorf("overwrite when full: %q", got)
		}
		if c.statInt(c.stats(""), "store_no_memory") == 0 {
			t.Error("store_no_memory not counted")
		}
	})
}

func TestConcurrentClients(t *testing.T) {
	addr := startOurs(t, serverOpts{memMB: 4})
	if got := dial(t, addr).roundTrip("set ctr 0 0 1\r\n0\r\n"); got != "STORED\r\n" {
		t.Fatalf("set ctr: %q", got)
	}
	const clients, rounds = 8, 300
	var wg sync.WaitGroup
	counts := make([][]int, clients) // the incr replies each client saw
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, addr)
			for i := range rounds {
				k := "cc" + strconv.Itoa(g) + "-" + strconv.Itoa(i%50)
				c.send("set " + k + " 0 0 3\r\nabc\r\n")
				c.send("incr ctr 1\r\nget " + k + "\r\ndelete " + k + "\r\nmg " + k + " v c t\r\n")
			}
			lines := strings.Split(strings.TrimSuffix(c.roundTrip(""), "\r\n"), "\r\n")
			if len(lines) != 7*rounds {
				t.Errorf("client %d: %d reply lines, want %d", g, len(lines), 7*rounds)
				return
			}
			prev := 0
			for i := range rounds {
				k := "cc" + strconv.Itoa(g) + "-" + strconv.Itoa(i%50)
				r := lines[7*i : 7*i+7]
				n, err := strconv.Atoi(r[1])
				want := []string{"STORED", r[1], "VALUE " + k + " 0 3", "abc", "END", "DELETED", "EN"}
				if err != nil || n <= prev || !slices.Equal(r, want) {
					t.Errorf("client %d round %d: %q, want %q with a counter above %d", g, i, r, want, prev)
					return
				}
				prev = n
				counts[g] = append(counts[g], n)
			}
		}()
	}
	wg.Wait()
	// Every increment happened exactly once: together the clients saw
	// each value 1..clients*rounds once.
	var all []int
	for _, c := range counts {
		all = append(all, c...)
	}
	slices.Sort(all)
	for i, n := range all {
		if n != i+1 {
			t.Fatalf("incr replies sorted: position %d is %d (lost or repeated increments)", i, n)
		}
	}
	if len(all) != clients*rounds {
		t.Fatalf("%d incr replies, want %d", len(all), clients*rounds)
	}
}

// TestConnectionChurn is Django's pattern: connect, get, close, per
// request. Every connection must be answered and released.
func TestConnectionChurn(t *testing.T) {
	forEachTarget(t, serverOpts{}, func(t *testing.T, addr string) {
		for range 300 {
			c := dial(t, addr)
			if got := c.roundTrip("get churn\r\n"); got != "END\r\n" {
				t.Fatalf("got %q", got)
			}
			c.nc.Close()
		}
		c := dial(t, addr)
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := c.stats("")
			if st["curr_connections"] == "1" {
				if n := c.statInt(st, "total_connections"); n < 301 {
					t.Errorf("total_connections %d", n)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("curr_connections stuck at %s", st["curr_connections"])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
