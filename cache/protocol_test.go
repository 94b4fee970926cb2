package cache

import (
	"strings"
	"testing"
	"time"
)

// TestBindingProtocolBinary: -B binary speaks only the binary protocol;
// a text command is read as a binary header (it waits for 24 bytes, then
// the bad magic closes the connection), as memcached -B binary does.
func TestBindingProtocolBinary(t *testing.T) {
	forEachTarget(t, serverOpts{proto: "binary"}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		resps := parseBinResps(t, c.binRoundTrip(binReq(BinVersion, "", "", "", 0, 0)+binReq(BinStat, "settings", "", "", 0, 0)))
		if len(resps) == 0 || resps[0].value != "1.6.18" {
			t.Fatalf("version over binary: %+v", resps)
		}
		var binding string
		for _, r := range resps {
			if r.key == "binding_protocol" {
				binding = r.value
			}
		}
		if binding != "binary" {
			t.Errorf("binding_protocol = %q, want binary", binding)
		}

		c = dial(t, addr)
		c.send("version\r\n")
		c.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, err := c.r.ReadByte(); err == nil {
			t.Fatalf("text command answered: got byte %q", b)
		}
		c.send(strings.Repeat("x", 15))
		if got := c.expectEOF(); got != "" {
			t.Errorf("got %q before the close", got)
		}
	})
}

// TestBindingProtocolASCII: -B ascii parses a binary request as text: no
// reply until a newline, then ERROR; text commands work.
func TestBindingProtocolASCII(t *testing.T) {
	forEachTarget(t, serverOpts{proto: "ascii"}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		if got := c.roundTrip("version\r\n"); got != "VERSION 1.6.18\r\n" {
			t.Fatalf("version: %q", got)
		}
		if got := c.stats("settings")["binding_protocol"]; got != "ascii" {
			t.Errorf("binding_protocol = %q, want ascii", got)
		}
		c = dial(t, addr)
		c.send(binReq(BinVersion, "", "", "", 0, 0))
		c.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, err := c.r.ReadByte(); err == nil {
			t.Fatalf("binary request answered: got byte %q", b)
		}
		c.nc.SetReadDeadline(time.Time{})
		if got := c.roundTrip("\r\n"); got != "ERROR\r\n" {
			t.Errorf("binary request then newline: %q, want ERROR", got)
		}
	})
}
