package integration

import (
	"bytes"
	encbin "encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Helpers of the crash test (crash_test.go): the messages' bodies, and a
// reader of the broker's segment files as broker/store documents them
// (store/doc.go, record.go), so that the test can tear a segment where it
// wants and know which messages it cut.

// crashBody is the body of message seq of publisher pub in iteration iter:
// a readable prefix naming the three, then filler derived from them, of a
// length derived from them (so records have varied sizes). A delivered
// body is checked byte for byte against it.
func crashBody(iter, pub, seq int) []byte {
	prefix := fmt.Sprintf("crash i=%d p=%d s=%d |", iter, pub, seq)
	h := fnv.New64a()
	h.Write([]byte(prefix))
	x := h.Sum64() | 1
	n := int(x % 1500)
	b := make([]byte, 0, len(prefix)+n)
	b = append(b, prefix...)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b = append(b, 'a'+byte(x%26))
	}
	return b
}

// parseCrashBody returns the iteration, publisher and sequence a body
// claims, and whether the body is exactly the one crashBody makes for
// them (false: garbage).
func parseCrashBody(b []byte) (iter, pub, seq int, ok bool) {
	end := bytes.IndexByte(b, '|')
	if end < 0 || end > 64 {
		return 0, 0, 0, false
	}
	if _, err := fmt.Sscanf(string(b[:end+1]), "crash i=%d p=%d s=%d |", &iter, &pub, &seq); err != nil {
		return 0, 0, 0, false
	}
	if iter < 0 || pub < 0 || seq <= 0 || !bytes.Equal(b, crashBody(iter, pub, seq)) {
		return iter, pub, seq, false
	}
	return iter, pub, seq, true
}

// segRecord is one well-formed message record of a segment file.
type segRecord struct {
	off, size int
	id        uint64
	queue     string // the store's queue key (vhost "\x00" name)
	body      []byte
}

var crashCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// readSegment parses a segment file: the 8-byte header "SBSEG\0\0\1",
// then records crc32c(LE, over len+type+payload) | len u32 LE | type u8 |
// payload, a message payload being id u64 LE | flags u8 | deliveries u32
// LE | queue, exchange, routing key, properties (uvarint length + bytes) |
// body. It returns the well-formed records up to the first bad one and the
// offset where parsing stopped (the file size when all are good).
func readSegment(path string) ([]segRecord, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if len(data) < 8 || string(data[:8]) != "SBSEG\x00\x00\x01" {
		return nil, 0, errors.New("no segment header")
	}
	var recs []segRecord
	off := 8
	for off+9 <= len(data) {
		l := int(encbin.LittleEndian.Uint32(data[off+4:]))
		if l > len(data)-off-9 {
			break
		}
		n := 9 + l
		if crc32.Checksum(data[off+4:off+n], crashCastagnoli) != encbin.LittleEndian.Uint32(data[off:]) ||
			data[off+8]&0x7f != 1 {
			break
		}
		p := data[off+9 : off+n]
		if len(p) < 13 {
			break
		}
		r := segRecord{off: off, size: n, id: encbin.LittleEndian.Uint64(p)}
		p = p[13:]
		var fields [4][]byte
		good := true
		for i := range fields {
			fl, k := encbin.Uvarint(p)
			if k <= 0 || fl > uint64(len(p)-k) {
				good = false
				break
			}
			fields[i], p = p[k:k+int(fl)], p[k+int(fl):]
		}
		if !good {
			break
		}
		r.queue, r.body = string(fields[0]), p
		recs = append(recs, r)
		off += n
	}
	return recs, off, nil
}

// storeFiles lists the segment and ack files of the store directory
// (names of 20 digits and .seg or .ack), each kind in number order.
func storeFiles(t *testing.T, dir string) (segs, acks []string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, de := range des {
		base, ext, ok := strings.Cut(de.Name(), ".")
		if _, err := strconv.ParseUint(base, 10, 64); !ok || err != nil || len(base) != 20 {
			continue
		}
		switch ext {
		case "seg":
			segs = append(segs, filepath.Join(dir, de.Name()))
		case "ack":
			acks = append(acks, filepath.Join(dir, de.Name()))
		}
	}
	slices.Sort(segs)
	slices.Sort(acks)
	return segs, acks
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// seqRanges formats sorted sequence numbers compactly, a run of numbers
// step apart as one range: with step 3, "3-12 18" is 3 6 9 12 18. It
// shows at most 40 ranges.
func seqRanges(seqs []int, step int) string {
	slices.Sort(seqs)
	var b strings.Builder
	n := 0
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+step {
			j++
		}
		if n++; n > 40 {
			fmt.Fprintf(&b, " ... (%d more)", len(seqs)-i)
			break
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprintf(&b, "%d", seqs[i])
		}
		i = j + 1
	}
	return b.String()
}

// logLines returns the lines of out that contain every one of words.
func logLines(out string, words ...string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		all := l != ""
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			lines = append(lines, l)
		}
	}
	return lines
}

// envInt reads a non-negative integer variable, or returns def.
func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// TestCrashChecker: the crash test's checker finds each kind of failure it
// is there for, in synthetic delivery streams, and accepts what RabbitMQ's
// guarantees allow. It needs no server.
func TestCrashChecker(t *testing.T) {
	const it = 2
	q := crashClassic // seq 3, 6, 9, ...
	// Publisher 0 sent up to 30, confirmed up to 24; publisher 1 sent and
	// confirmed 3, 6, 9.
	p0 := &crashPublisher{id: 0, sent: 30, confirmed: make([]bool, 31)}
	for s := 1; s <= 24; s++ {
		p0.confirmed[s] = true
	}
	p1 := &crashPublisher{id: 1, sent: 9, confirmed: make([]bool, 10)}
	for s := 1; s <= 9; s++ {
		p1.confirmed[s] = true
	}
	pubs := []*crashPublisher{p0, p1}
	del := func(iter, pub, seq int, redelivered bool) crashDelivery {
		return crashDelivery{body: crashBody(iter, pub, seq), mode: 2, redelivered: redelivered,
			headers: map[string]any{"crash-pub": int32(pub), "crash-seq": int64(seq)}}
	}
	// good: every message once, p0's 27 (unconfirmed) included, p1 interleaved.
	good := func() []crashDelivery {
		var g []crashDelivery
		for s := 3; s <= 27; s += 3 {
			g = append(g, del(it, 0, s, false))
			if s <= 9 {
				g = append(g, del(it, 1, s, false))
			}
		}
		return g
	}
	without := func(g []crashDelivery, pub, seq int) []crashDelivery {
		var out []crashDelivery
		for _, d := range g {
			if _, p, s, _ := parseCrashBody(d.body); p != pub || s != seq {
				out = append(out, d)
			}
		}
		return out
	}
	k12 := msgKey{q, 0, 12}
	acked12 := newCrashConsumer(q, false)
	acked12.delivered[[2]int{0, 12}], acked12.acked[[2]int{0, 12}] = true, true
	held12 := newCrashConsumer(q, false)
	held12.delivered[[2]int{0, 12}] = true

	for _, tc := range []struct {
		name    string
		got     []crashDelivery
		pre     *crashConsumer
		cut     map[msgKey]bool
		intact  map[msgKey]bool
		problem string // "" none
	}{
		{name: "all there", got: good()},
		{name: "unconfirmed missing", got: without(good(), 0, 27)},
		{name: "confirmed lost", got: without(good(), 0, 12), problem: "LOST 1 confirmed messages of publisher 0 (of 30 sent): seq 12"},
		{name: "lost, other publisher", got: without(good(), 1, 3), problem: "LOST 1 confirmed messages of publisher 1"},
		{name: "acknowledged before a kill, gone", got: without(good(), 0, 12), pre: acked12},
		{name: "held before a kill, lost", got: without(good(), 0, 12), pre: held12, problem: "LOST"},
		{name: "cut off", got: without(good(), 0, 12), cut: map[msgKey]bool{k12: true}},
		{name: "before the cut, unconfirmed, lost", got: without(good(), 0, 27),
			intact: map[msgKey]bool{{q, 0, 27}: true}, problem: "before the cut"},
		{name: "misorder", got: func() []crashDelivery {
			g := good()
			g[4], g[6] = g[6], g[4] // p0 9 and 12
			return g
		}(), problem: "publisher order broken"},
		{name: "garbage", got: append(good(), crashDelivery{body: []byte("hello"), mode: 2}), problem: "garbage"},
		{name: "garbled body", got: func() []crashDelivery {
			g := good()
			g[2].body = append([]byte(nil), g[2].body...)
			g[2].body[len(g[2].body)-1] ^= 1
			return g
		}(), problem: "garbage"},
		{name: "never published", got: append(good(), del(it, 0, 33, false)), problem: "never published"},
		{name: "unknown publisher", got: append(good(), del(it, 7, 3, false)), problem: "never published"},
		{name: "later iteration", got: append(good(), del(it+1, 0, 3, false)), problem: "never published"},
		{name: "routed elsewhere", got: append(good(), del(it, 0, 4, false)), problem: "not routed"},
		{name: "earlier iteration back", got: append([]crashDelivery{del(it-1, 0, 3, false)}, good()...), problem: "came back"},
		{name: "confirmed duplicate not redelivered", got: append(good(), del(it, 0, 6, false)), problem: "delivered 2 times"},
		{name: "confirmed duplicate redelivered", got: append(good(), del(it, 0, 6, true))},
		{name: "unconfirmed duplicate", got: append(good(), del(it, 0, 27, false))},
		{name: "headers", got: func() []crashDelivery {
			g := good()
			g[0].headers = map[string]any{"crash-pub": int32(0), "crash-seq": int64(99)}
			return g
		}(), problem: "headers"},
		{name: "transient", got: func() []crashDelivery { g := good(); g[0].mode = 1; return g }(), problem: "delivery mode 1"},
	} {
		_, problems := checkDeliveries(it, q, tc.got, pubs, tc.pre, tc.cut, tc.intact)
		all := strings.Join(problems, "\n")
		switch {
		case tc.problem == "" && len(problems) > 0:
			t.Errorf("%s: unexpected problems:\n%s", tc.name, all)
		case tc.problem != "" && !strings.Contains(all, tc.problem):
			t.Errorf("%s: want a problem with %q, got:\n%s", tc.name, tc.problem, all)
		}
	}
}
