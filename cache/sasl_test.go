package cache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func plain(authz, user, pass string) string { return authz + "\x00" + user + "\x00" + pass }

var (
	authOK     = binReq(BinSASLAuth, "PLAIN", "", plain("", "user", "secret"), 0x11, 0)
	authOKRes  = binRes(BinSASLAuth, 0, "", "", "Authenticated", 0x11, 0)
	authBad    = binReq(BinSASLAuth, "PLAIN", "", plain("", "user", "wrong"), 0x12, 0)
	authBadRes = binErr(BinSASLAuth, BinStatusAuthError, 0x12)
)

// saslTranscripts run against our server with SASL and a password file,
// and against memcached -S with the same users in a Cyrus sasldb.
var saslTranscripts = []struct {
	name      string
	req, want string
	closes    bool
}{
	{name: "command before auth", closes: true,
		req:  binReq(BinGet, "k", "", "", 1, 0) + binNoopReq,
		want: binErr(BinGet, BinStatusAuthError, 1)},
	{name: "noop before auth", closes: true,
		req:  binReq(BinNoop, "", "", "", 1, 0),
		want: binErr(BinNoop, BinStatusAuthError, 1)},
	{name: "version before auth then list mechs",
		req:  binReq(BinVersion, "", "", "", 1, 0) + binReq(BinSASLListMechs, "", "", "", 2, 0) + authOK,
		want: binRes(BinVersion, 0, "", "", "1.6.18", 1, 0) + binRes(BinSASLListMechs, 0, "", "", "PLAIN", 2, 0) + authOKRes},
	{name: "auth then commands",
		req: authOK + binReq(BinSet, "k", setExtras(1, 0), "v", 1, 0) + binReq(BinGet, "k", "", "", 2, 0) +
			binReq(BinDelete, "k", "", "", 3, 0),
		want: authOKRes + binRes(BinSet, 0, "", "", "", 1, 1) + binRes(BinGet, 0, u32(1), "", "v", 2, 1) +
			binRes(BinDelete, 0, "", "", "", 3, 0)},
	{name: "wrong password keeps the connection",
		req:  authBad + authBad + authOK,
		want: authBadRes + authBadRes + authOKRes},
	{name: "unknown user", req: binReq(BinSASLAuth, "PLAIN", "", plain("", "nobody", "secret"), 1, 0) + authOK,
		want: binErr(BinSASLAuth, BinStatusAuthError, 1) + authOKRes},
	{name: "second user", req: binReq(BinSASLAuth, "PLAIN", "", plain("", "other", "pass2"), 1, 0),
		want: binRes(BinSASLAuth, 0, "", "", "Authenticated", 1, 0)},
	{name: "authzid equal to user", req: binReq(BinSASLAuth, "PLAIN", "", plain("user", "user", "secret"), 1, 0),
		want: binRes(BinSASLAuth, 0, "", "", "Authenticated", 1, 0)},
	{name: "authzid of another user", req: binReq(BinSASLAuth, "PLAIN", "", plain("other", "user", "secret"), 1, 0) + authOK,
		want: binErr(BinSASLAuth, BinStatusAuthError, 1) + authOKRes},
	{name: "unknown mechanism", req: binReq(BinSASLAuth, "CRAM-MD5", "", plain("", "user", "secret"), 1, 0) + authOK,
		want: binErr(BinSASLAuth, BinStatusAuthError, 1) + authOKRes},
	{name: "mechanism name too long",
		req:  binReq(BinSASLAuth, strings.Repeat("P", 33), "", "abc", 1, 0) + authOK,
		want: binErr(BinSASLAuth, BinStatusInvalid, 1) + authOKRes},
	{name: "step without start", req: binReq(BinSASLStep, "PLAIN", "", plain("", "user", "secret"), 1, 0) + authOK,
		want: binErr(BinSASLStep, BinStatusAuthError, 1) + authOKRes},
	{name: "auth without data continues",
		req: binReq(BinSASLAuth, "PLAIN", "", "", 1, 0) + binReq(BinSASLStep, "PLAIN", "", plain("", "user", "secret"), 2, 0) +
			binReq(BinGet, "k", "", "", 3, 0),
		want: binRes(BinSASLAuth, BinStatusAuthContinue, "", "", "", 1, 0) + binRes(BinSASLStep, 0, "", "", "Authenticated", 2, 0) +
			binErr(BinGet, BinStatusKeyNotFound, 3)},
	{name: "failed re-auth drops authentication", closes: true,
		req:  authOK + authBad + binReq(BinGet, "k", "", "", 3, 0),
		want: authOKRes + authBadRes + binErr(BinGet, BinStatusAuthError, 3)},
	{name: "list mechs drops authentication", closes: true,
		req:  authOK + binReq(BinSASLListMechs, "", "", "", 2, 0) + binReq(BinGet, "k", "", "", 3, 0),
		want: authOKRes + binRes(BinSASLListMechs, 0, "", "", "PLAIN", 2, 0) + binErr(BinGet, BinStatusAuthError, 3)},
	{name: "text protocol is parsed as binary", closes: true,
		req:  "version\r\nversion\r\nversion\r\n",
		want: ""},
}

func TestSASLTranscripts(t *testing.T) {
	for _, tc := range saslTranscripts {
		t.Run(tc.name, func(t *testing.T) {
			forEachTarget(t, serverOpts{sasl: true}, func(t *testing.T, addr string) {
				c := dial(t, addr)
				var got string
				if tc.closes {
					c.send(tc.req)
					got = c.expectEOF()
				} else {
					got = c.binRoundTrip(tc.req)
				}
				if got != tc.want {
					t.Errorf("reply mismatch\n got: %v\nwant: %v", parseBinResps(t, got), parseBinResps(t, tc.want))
				}
			})
		})
	}
}

// TestSASLTextWaitsForHeader: with SASL every connection is binary, so a
// short text command waits for 24 bytes like memcached -S.
func TestSASLTextWaitsForHeader(t *testing.T) {
	forEachTarget(t, serverOpts{sasl: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.send("version\r\n")
		c.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, err := c.r.ReadByte(); err == nil {
			t.Fatalf("got byte %q", b)
		}
		c.send(strings.Repeat("x", 15))
		if got := c.expectEOF(); got != "" {
			t.Errorf("got %q", got)
		}
	})
}

func TestSASLStats(t *testing.T) {
	forEachTarget(t, serverOpts{sasl: true}, func(t *testing.T, addr string) {
		c := dial(t, addr)
		c.binRoundTrip(authBad + authOK)
		got := map[string]string{}
		for _, r := range parseBinResps(t, c.binRoundTrip(binReq(BinStat, "", "", "", 0, 0)+binReq(BinStat, "settings", "", "", 0, 0))) {
			got[r.key] = r.value
		}
		want := map[string]string{"auth_cmds": "2", "auth_errors": "1", "auth_enabled_sasl": "yes", "binding_protocol": "binary"}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q", k, got[k], v)
			}
		}
	})
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "alice:pw\r\n\nbob:p:extra\nalice:second\n")
	creds, err := loadPasswordFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		msg string
		ok  bool
	}{
		{plain("", "alice", "pw"), true},
		{plain("", "alice", "second"), false},
		{plain("", "bob", "p"), true},
		{plain("", "bob", "p:extra"), false},
		{plain("bob", "bob", "p"), true},
		{plain("alice", "bob", "p"), false},
		{plain("", "carol", ""), false},
		{"\x00alice", false},
		{"", false},
	} {
		if got := creds.checkPlain([]byte(tc.msg)); got != tc.ok {
			t.Errorf("checkPlain(%q) = %v", tc.msg, got)
		}
	}
	for _, tc := range []struct{ text, want string }{
		{"alice\n", "bad:1: want user:password"},
		{"alice:pw\n:pw\n", "bad:2: empty user name"},
		{"a:" + strings.Repeat("p", 300) + "\n", "bad:1: line longer"},
		{"\n\n", "no users"},
		{"a:b\x00c\n", "bad:1: NUL"},
	} {
		p := write("bad", tc.text)
		if _, err := loadPasswordFile(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.text, err, tc.want)
		}
		cfg := NewConfig()
		cfg.SASL, cfg.SASLPasswordFile = true, p
		if err := cfg.Validate(); err == nil {
			t.Errorf("%q: Validate accepted", tc.text)
		}
	}
	cfg := NewConfig()
	cfg.SASL, cfg.SASLPasswordFile = true, filepath.Join(dir, "missing")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
	cfg.SASLPasswordFile = ""
	if err := cfg.Validate(); err == nil {
		t.Error("SASL without file accepted")
	}
	cfg.SASLPasswordFile, cfg.UDPAddrs = good, []string{"127.0.0.1:0"}
	if err := cfg.Validate(); err == nil {
		t.Error("SASL with UDP accepted")
	}
}
