package main

import (
	"bufio"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// fakeReply returns a client whose server side writes reply and discards input.
func fakeReply(t *testing.T, reply string) *mcConn {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	go func() {
		go srv.Write([]byte(reply))
		buf := make([]byte, 4096)
		for {
			if _, err := srv.Read(buf); err != nil {
				return
			}
		}
	}()
	return &mcConn{nc: cli, r: bufio.NewReader(cli), w: bufio.NewWriter(cli), data: make([]byte, 16)}
}

func TestGetCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	good, flags := makeValue(nil, "k1", 50, r)
	item := func(key string, flags uint32, v []byte) string {
		return "VALUE " + key + " " + strconv.FormatUint(uint64(flags), 10) + " " + strconv.Itoa(len(v)) + "\r\n" + string(v) + "\r\n"
	}
	corrupt := append([]byte{}, good...)
	corrupt[10] ^= 1
	cases := []struct {
		name          string
		keys          []string
		reply         string
		misses, bad   int
		wantProtoFail bool
	}{
		{"hit", []string{"k1"}, item("k1", flags, good) + "END\r\n", 0, 0, false},
		{"miss", []string{"k1"}, "END\r\n", 1, 0, false},
		{"corrupt", []string{"k1"}, item("k1", flags, corrupt) + "END\r\n", 0, 1, false},
		{"wrong key", []string{"k2"}, item("k1", flags, good) + "END\r\n", 0, 1, false},
		{"multi partial", []string{"k0", "k1", "k3"}, item("k1", flags, good) + "END\r\n", 2, 0, false},
		{"error line", []string{"k1"}, "SERVER_ERROR out of memory\r\n", 0, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mc := fakeReply(t, c.reply)
			misses, bad, err := mc.getCheck(c.keys...)
			if (err != nil) != c.wantProtoFail || misses != c.misses || bad != c.bad {
				t.Fatalf("got misses=%d bad=%d err=%v; want misses=%d bad=%d proto error=%v",
					misses, bad, err, c.misses, c.bad, c.wantProtoFail)
			}
		})
	}
}
