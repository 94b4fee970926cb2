package cache

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// saslUserStore adds and removes SASL users of a running server.
type saslUserStore struct {
	add    func(user, pass string)
	remove func(user string)
}

// TestSASLCredentialsReadAtEachLogin: a user added to the credentials
// after the server started can log in, and one removed can no longer,
// without a restart. memcached reads its MEMCACHED_SASL_PWDB file (ours)
// or its Cyrus sasldb (Debian's) at every authentication.
func TestSASLCredentialsReadAtEachLogin(t *testing.T) {
	body := func(t *testing.T, addr string, users saslUserStore) {
		auth := func(user, pass string, opaque uint32) string {
			return binReq(BinSASLAuth, "PLAIN", "", plain("", user, pass), opaque, 0)
		}
		ok := func(opaque uint32) string { return binRes(BinSASLAuth, 0, "", "", "Authenticated", opaque, 0) }
		refused := func(opaque uint32) string { return binErr(BinSASLAuth, BinStatusAuthError, opaque) }

		// Every exchange ends with a successful login: binRoundTrip's
		// trailing noop needs an authenticated connection.
		c := dial(t, addr)
		if got, want := c.binRoundTrip(auth("newcomer", "fresh", 2)+auth("user", "secret", 1)), refused(2)+ok(1); got != want {
			t.Fatalf("before adding: %q, want %q", got, want)
		}
		users.add("newcomer", "fresh")
		if got, want := c.binRoundTrip(auth("newcomer", "stale", 4)+auth("newcomer", "fresh", 3)), refused(4)+ok(3); got != want {
			t.Errorf("after adding, same connection: %q, want %q", got, want)
		}
		c2 := dial(t, addr)
		if got, want := c2.binRoundTrip(auth("newcomer", "fresh", 5)), ok(5); got != want {
			t.Errorf("after adding, new connection: %q, want %q", got, want)
		}
		users.remove("user")
		c3 := dial(t, addr)
		if got, want := c3.binRoundTrip(auth("user", "secret", 6)+auth("newcomer", "fresh", 7)), refused(6)+ok(7); got != want {
			t.Errorf("after removing: %q, want %q", got, want)
		}
		// An authenticated connection stays authenticated.
		if got, want := c.binRoundTrip(binReq(BinGet, "nope", "", "", 8, 0)), binErr(BinGet, BinStatusKeyNotFound, 8); got != want {
			t.Errorf("earlier login after removal: %q, want %q", got, want)
		}
	}

	t.Run("ours", func(t *testing.T) {
		path := writePasswordFile(t)
		cfg := NewConfig()
		cfg.Addrs = []string{"127.0.0.1:0"}
		cfg.SASL = true
		cfg.SASLPasswordFile = path
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.Shutdown(ctx)
		})
		edit := func(f func(lines []string) []string) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := f(strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"))
			// Replace the file atomically, as an editor or config tool would.
			tmp := path + ".new"
			writeFile(t, tmp, []byte(strings.Join(lines, "\n")+"\n"))
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
		body(t, s.Addrs()[0].String(), saslUserStore{
			add: func(user, pass string) {
				edit(func(l []string) []string { return append(l, user+":"+pass) })
			},
			remove: func(user string) {
				edit(func(l []string) []string {
					var out []string
					for _, x := range l {
						if !strings.HasPrefix(x, user+":") {
							out = append(out, x)
						}
					}
					return out
				})
			},
		})
	})
	t.Run("memcached", func(t *testing.T) {
		needMemcached(t)
		env := saslConf(t)
		db := filepath.Join(strings.TrimPrefix(env[0], "SASL_CONF_PATH="), "sasldb2")
		saslpasswd := func(stdin string, args ...string) {
			cmd := exec.Command("saslpasswd2", append([]string{"-a", "memcached", "-f", db}, args...)...)
			cmd.Stdin = strings.NewReader(stdin)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("saslpasswd2 %q: %v: %s", args, err, out)
			}
		}
		addr := startMemcachedEnv(t, serverOpts{sasl: true}, env)
		body(t, addr, saslUserStore{
			add:    func(user, pass string) { saslpasswd(pass, "-p", "-c", user) },
			remove: func(user string) { saslpasswd("", "-d", user) },
		})
	})
}
