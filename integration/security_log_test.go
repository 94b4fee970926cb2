package integration

import (
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestSecurityNoPasswordInDebugLog runs serve at debug level, creates
// users and changes passwords through ctl, fails and succeeds AMQP logins
// with PLAIN and AMQPLAIN and a memcached SASL login, and finds none of
// the passwords in the output. A SASL password file readable by others
// gets one warning at startup.
func TestSecurityNoPasswordInDebugLog(t *testing.T) {
	pw := func(what string) string { return "Pw-" + what + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) }
	secrets := map[string]string{}
	for _, k := range []string{"add", "changed", "wrong", "guest-wrong", "amqplain-wrong", "sasl", "sasl-wrong", "second"} {
		secrets[k] = pw(k)
	}
	pwdb := filepath.Join(t.TempDir(), "pwdb")
	if err := os.WriteFile(pwdb, []byte("memuser:"+secrets["sasl"]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newServer(t)
	s.proc = start(t, []string{"MEMCACHED_SASL_PWDB=" + pwdb}, s.args("--log-level", "debug", "--etcd-log-level", "debug", "--memcached-options", "-S")...)
	s.waitReady(30 * time.Second)

	ctlCmd(t, s, "add_user", "alice", secrets["add"])
	ctlCmd(t, s, "set_permissions", "alice", ".*", ".*", ".*")
	ctlCmd(t, s, "change_password", "alice", secrets["changed"])
	ctlCmd(t, s, "add_user", "bob", secrets["second"])
	// A ctl command that fails (wrong number of arguments).
	cmd := execCtl(s, "add_user", "carol", secrets["second"], "extra")
	cmd.Run()

	refused := func(user, pass string, auth ...amqp.Authentication) {
		t.Helper()
		cfg := amqp.Config{Dial: amqp.DefaultDial(5 * time.Second), SASL: auth}
		c, err := amqp.DialConfig(fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", user, pass, s.amqpPort), cfg)
		if err == nil {
			c.Close()
			t.Errorf("%s logged in with a wrong password", user)
		}
	}
	refused("alice", secrets["add"]) // the old password
	refused("alice", secrets["wrong"])
	refused("guest", secrets["guest-wrong"])
	refused("alice", secrets["amqplain-wrong"], &amqp.AMQPlainAuth{Username: "alice", Password: secrets["amqplain-wrong"]})
	c, err := dialAMQP(s, "alice", secrets["changed"])
	if err != nil {
		t.Fatalf("alice with the new password: %v", err)
	}
	c.Close()

	for _, p := range []string{secrets["sasl-wrong"], secrets["sasl"]} {
		if _, err := saslPlain(fmt.Sprintf("127.0.0.1:%d", s.memcachedPort), "memuser", p); err != nil {
			t.Fatalf("memcached SASL: %v", err)
		}
	}

	s.stop(syscall.SIGTERM)
	out := s.output()
	if !strings.Contains(out, "level=DEBUG") {
		t.Fatalf("no debug lines: the test proves nothing:\n%s", out)
	}
	for what, p := range secrets {
		if strings.Contains(out, p) {
			t.Errorf("password %q (%s) in the log:\n%s", p, what, out)
		}
	}
	if n := strings.Count(out, "SASL password file "+pwdb+" is accessible to group or others"); n != 1 {
		t.Errorf("%d warnings about the password file, want 1:\n%s", n, out)
	}
}

func execCtl(s *server, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, append([]string{"ctl", "--data-dir", s.dataDir}, args...)...)
	cmd.Env = childEnv()
	return cmd
}

// saslPlain does a memcached binary-protocol SASL PLAIN authentication
// and returns the response status.
func saslPlain(addr, user, pass string) (uint16, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	key, val := []byte("PLAIN"), []byte("\x00"+user+"\x00"+pass)
	hdr := make([]byte, 24)
	hdr[0], hdr[1] = 0x80, 0x21 // request, SASL auth
	be.BigEndian.PutUint16(hdr[2:], uint16(len(key)))
	be.BigEndian.PutUint32(hdr[8:], uint32(len(key)+len(val)))
	if _, err := c.Write(append(append(hdr, key...), val...)); err != nil {
		return 0, err
	}
	resp := make([]byte, 24)
	if _, err := io.ReadFull(c, resp); err != nil {
		return 0, err
	}
	return be.BigEndian.Uint16(resp[6:]), nil
}
