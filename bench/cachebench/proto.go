package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"time"
)

// A minimal memcached text-protocol client: one net.Conn with bufio, no
// allocation per request on the hot path. Only what the loads need: set,
// get (one or many keys, optionally pipelined) and stats.
//
// Every value the benchmark stores is self-describing so that each reply
// can be checked cheaply: value = key + ":" + filler, and the item's flags
// are the CRC-32C of the value. A reply whose key, prefix or checksum does
// not match is counted as "bad" (wrong data), never as a successful op.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fillerPool is the random filler that values are cut from.
var fillerPool = func() []byte {
	b := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}()

// errProto is an unexpected or malformed reply; the connection is dropped.
var errProto = errors.New("protocol error")

type mcConn struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	data []byte // scratch for value bodies
	key  []byte // scratch for the key of the last VALUE line
	num  []byte // scratch for formatting numbers
}

func dialMC(addr string, deadline time.Time) (*mcConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if !deadline.IsZero() {
		nc.SetDeadline(deadline)
	}
	return &mcConn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), w: bufio.NewWriterSize(nc, 64<<10),
		data: make([]byte, 8<<10), key: make([]byte, 0, 256), num: make([]byte, 0, 32)}, nil
}

func (c *mcConn) Close() error { return c.nc.Close() }

// makeValue builds a value of n bytes (n > len(key)) for key into buf and
// returns it with its flags (CRC-32C of the value).
func makeValue(buf []byte, key string, n int, r *rand.Rand) ([]byte, uint32) {
	buf = append(buf[:0], key...)
	buf = append(buf, ':')
	rest := n - len(buf)
	off := r.IntN(len(fillerPool) - rest)
	buf = append(buf, fillerPool[off:off+rest]...)
	return buf, crc32.Checksum(buf, castagnoli)
}

// checkValue reports whether a value read for key is intact.
func checkValue(key string, flags uint32, data []byte) bool {
	return len(data) > len(key) && string(data[:len(key)]) == key && data[len(key)] == ':' &&
		crc32.Checksum(data, castagnoli) == flags
}

// writeSet buffers "set key flags 0 len\r\nvalue\r\n" (not flushed).
func (c *mcConn) writeSet(key string, flags uint32, value []byte) {
	c.w.WriteString("set ")
	c.w.WriteString(key)
	c.num = append(c.num[:0], ' ')
	c.num = strconv.AppendUint(c.num, uint64(flags), 10)
	c.num = append(c.num, " 0 "...)
	c.num = strconv.AppendInt(c.num, int64(len(value)), 10)
	c.num = append(c.num, "\r\n"...)
	c.w.Write(c.num)
	c.w.Write(value)
	c.w.WriteString("\r\n")
}

// writeGet buffers "get k1 k2 ...\r\n" (not flushed).
func (c *mcConn) writeGet(keys ...string) {
	c.w.WriteString("get")
	for _, k := range keys {
		c.w.WriteByte(' ')
		c.w.WriteString(k)
	}
	c.w.WriteString("\r\n")
}

// readLine returns the next reply line without its "\r\n"; it is valid until the next read.
func (c *mcConn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q", errProto, line)
	}
	return line[:len(line)-2], nil
}

// readStored reads the reply to one set.
func (c *mcConn) readStored() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	if string(line) != "STORED" {
		return fmt.Errorf("%w: set answered %q", errProto, line)
	}
	return nil
}

// readValue reads one element of a get reply: a VALUE block (end=false; key,
// flags and data valid until the next read) or the final END (end=true).
func (c *mcConn) readValue() (key []byte, flags uint32, data []byte, end bool, err error) {
	line, err := c.readLine()
	if err != nil {
		return nil, 0, nil, false, err
	}
	if string(line) == "END" {
		return nil, 0, nil, true, nil
	}
	// VALUE <key> <flags> <bytes>[ <cas>]
	rest, ok := bytes.CutPrefix(line, []byte("VALUE "))
	if !ok {
		return nil, 0, nil, false, fmt.Errorf("%w: get answered %q", errProto, line)
	}
	k, rest, ok1 := bytes.Cut(rest, []byte(" "))
	f, rest, ok2 := bytes.Cut(rest, []byte(" "))
	n, _, _ := bytes.Cut(rest, []byte(" "))
	fl, err1 := strconv.ParseUint(string(f), 10, 32)
	size, err2 := strconv.Atoi(string(n))
	if !ok1 || !ok2 || err1 != nil || err2 != nil || size < 0 {
		return nil, 0, nil, false, fmt.Errorf("%w: bad VALUE line %q", errProto, line)
	}
	c.key = append(c.key[:0], k...) // line is invalidated by the next read
	if cap(c.data) < size+2 {
		c.data = make([]byte, size+2)
	}
	data = c.data[:size+2]
	if _, err := io.ReadFull(c.r, data); err != nil {
		return nil, 0, nil, false, err
	}
	if data[size] != '\r' || data[size+1] != '\n' {
		return nil, 0, nil, false, fmt.Errorf("%w: value not terminated by \\r\\n", errProto)
	}
	return c.key, uint32(fl), data[:size], false, nil
}

// getCheck reads the reply to "get keys..." and checks every returned value.
// Values must come back in request order (misses skipped), as memcached does.
// It returns how many keys missed and how many values were wrong.
func (c *mcConn) getCheck(keys ...string) (misses, bad int, err error) {
	next := 0 // index of the first key not yet matched
	hits := 0
	for {
		key, flags, data, end, err := c.readValue()
		if err != nil {
			return 0, 0, err
		}
		if end {
			break
		}
		hits++
		i := next
		for i < len(keys) && keys[i] != string(key) {
			i++
		}
		if i == len(keys) || !checkValue(keys[i], flags, data) {
			bad++
			continue
		}
		next = i + 1
	}
	if hits > len(keys) {
		return 0, 0, fmt.Errorf("%w: %d values for %d keys", errProto, hits, len(keys))
	}
	return len(keys) - hits, bad, nil
}

// stats sends "stats" and returns its STAT lines as a map.
func (c *mcConn) stats() (map[string]string, error) {
	c.w.WriteString("stats\r\n")
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if string(line) == "END" {
			return m, nil
		}
		f := bytes.Fields(line)
		if len(f) < 3 || string(f[0]) != "STAT" {
			return nil, fmt.Errorf("%w: stats line %q", errProto, line)
		}
		m[string(f[1])] = string(bytes.Join(f[2:], []byte(" ")))
	}
}
