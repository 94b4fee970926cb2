package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"
	"time"
)

// binReq builds a binary request.
func binReq(op uint8, key, extras, value string, opaque uint32, cas uint64) string {
	var h [BinHeaderLen]byte
	h[0] = BinRequestMagic
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = uint8(len(extras))
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], opaque)
	binary.BigEndian.PutUint64(h[16:], cas)
	return string(h[:]) + extras + key + value
}

// binRes builds an expected response.
func binRes(op uint8, status uint16, extras, key, value string, opaque uint32, cas uint64) string {
	b := AppendBinaryHeader(nil, op, status, uint8(len(extras)), uint16(len(key)),
		uint32(len(extras)+len(key)+len(value)), opaque, cas)
	return string(b) + extras + key + value
}

func binErr(op uint8, status uint16, opaque uint32) string {
	return binRes(op, status, "", "", binStatusText(status), opaque, 0)
}

func u32(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return string(b[:])
}

func u64(v uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

// setExtras is flags + exptime.
func setExtras(flags, exp uint32) string { return u32(flags) + u32(exp) }

// arithExtras is delta + initial + exptime.
func arithExtras(delta, initial uint64, exp uint32) string {
	return u64(delta) + u64(initial) + u32(exp)
}

var binNoopReq = binReq(BinNoop, "", "", "", 0xfeedface, 0)
var binNoopRes = binRes(BinNoop, 0, "", "", "", 0xfeedface, 0)

// binRoundTrip sends req and a NOOP, and returns every byte answered
// before the NOOP's reply.
func (c *client) binRoundTrip(req string) string {
	c.t.Helper()
	c.send(req + binNoopReq)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out bytes.Buffer
	for {
		hdr := make([]byte, BinHeaderLen)
		if _, err := io.ReadFull(c.r, hdr); err != nil {
			c.t.Fatalf("read after %q: %v", out.String(), err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[8:]))
		if _, err := io.ReadFull(c.r, body); err != nil {
			c.t.Fatalf("read body after %q: %v", out.String(), err)
		}
		if string(hdr)+string(body) == binNoopRes {
			return out.String()
		}
		out.Write(hdr)
		out.Write(body)
	}
}

// binResp is a decoded response.
type binResp struct {
	op      uint8
	status  uint16
	opaque  uint32
	cas     uint64
	extras  string
	key     string
	value   string
	bodyLen int
}

func parseBinResps(t testing.TB, b string) []binResp {
	t.Helper()
	var out []binResp
	for len(b) > 0 {
		if len(b) < BinHeaderLen || b[0] != BinResponseMagic {
			t.Fatalf("bad response bytes %q", b)
		}
		kl := int(binary.BigEndian.Uint16([]byte(b[2:])))
		el := int(b[4])
		bl := int(binary.BigEndian.Uint32([]byte(b[8:])))
		r := binResp{op: b[1], status: binary.BigEndian.Uint16([]byte(b[6:])),
			opaque: binary.BigEndian.Uint32([]byte(b[12:])), cas: binary.BigEndian.Uint64([]byte(b[16:])), bodyLen: bl}
		body := b[BinHeaderLen : BinHeaderLen+bl]
		r.extras, r.key, r.value = body[:el], body[el:el+kl], body[el+kl:]
		out = append(out, r)
		b = b[BinHeaderLen+bl:]
	}
	return out
}

func (r binResp) String() string {
	return fmt.Sprintf("{op %#x status %#x opaque %#x cas %d extras %q key %q value %q}", r.op, r.status, r.opaque, r.cas, r.extras, r.key, r.value)
}
