package amqp

import (
	"bytes"
	"io"
	"testing"
)

// chunkReader returns one chunk per Read (cut to the caller's buffer, the
// rest kept for the next Read), like a socket that delivers what arrived.
type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestFrameReaderBuffers: a reader waits on its small buffer, moves to a
// larger one for a frame that does not fit or input that keeps filling
// it, and goes back to the small one once the input is parsed.
func TestFrameReaderBuffers(t *testing.T) {
	heartbeat := AppendHeartbeat(nil)
	small := AppendFrame(nil, FrameBody, 1, make([]byte, 100))
	large := AppendFrame(nil, FrameBody, 1, bytes.Repeat([]byte{7}, 40<<10)) // over the pooled size
	mid := AppendFrame(nil, FrameBody, 1, bytes.Repeat([]byte{5}, 2000))
	var stream []byte // 200 small frames, arriving at once
	for range 200 {
		stream = append(stream, small...)
	}
	r := &chunkReader{chunks: [][]byte{heartbeat, large, heartbeat, mid, small, stream, heartbeat}}
	fr := NewFrameReader(r)
	fr.SetFrameMax(131072)
	read := func(what string, payload int) {
		t.Helper()
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(f.Payload) != payload {
			t.Fatalf("%s: payload %d bytes, want %d", what, len(f.Payload), payload)
		}
	}
	bufLen := func(what string, want int) {
		t.Helper()
		if len(fr.buf) != want {
			t.Fatalf("%s: buffer %d bytes, want %d", what, len(fr.buf), want)
		}
	}
	read("heartbeat", 0)
	bufLen("after a heartbeat", idleBufSize)
	read("large frame", 40<<10)
	if len(fr.buf) < len(large) || fr.big != nil {
		t.Fatalf("large frame: buffer %d bytes (pooled %v), want one of its own", len(fr.buf), fr.big != nil)
	}
	read("heartbeat after it", 0)
	bufLen("once the large frame is parsed", idleBufSize)
	read("a 2000-byte frame", 2000)
	if fr.big == nil {
		t.Fatal("a frame over the small buffer: not in a pooled buffer")
	}
	read("small frame", 100)
	bufLen("after a small read", idleBufSize)
	for i := range 200 {
		read("streamed frame", 100)
		if i == 100 && fr.big == nil {
			t.Fatal("input that fills the small buffer: not moved to the pooled one")
		}
	}
	read("heartbeat at the end", 0)
	bufLen("at the end", idleBufSize)
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}
