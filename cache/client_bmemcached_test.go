package cache

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const bmemcachedScript = `
import sys, bmemcached
addr, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
c = bmemcached.Client((addr,), user, password)
assert c.set('a', 'alpha') is True
assert c.set('n', 42) is True
assert c.set('big', 'x' * 5000) is True
assert c.set('obj', {'k': [1, 2]}) is True
assert c.get('a') == 'alpha', c.get('a')
assert c.get('n') == 42
assert c.get('big') == 'x' * 5000
assert c.get('obj') == {'k': [1, 2]}
assert c.get('missing') is None
assert c.add('a', 'again') is False
assert c.replace('a', 'beta') is True
assert c.get_multi(['a', 'n', 'missing', 'obj']) == {'a': 'beta', 'n': 42, 'obj': {'k': [1, 2]}}, c.get_multi(['a', 'n', 'missing'])
assert c.incr('counter', 5) == 0
assert c.incr('counter', 5) == 5
assert c.decr('counter', 2) == 3
assert c.set_multi({'m1': 'one', 'm2': 'two'}) == []
assert c.get_multi(['m1', 'm2']) == {'m1': 'one', 'm2': 'two'}
assert c.delete('a') is True
assert c.get('a') is None
assert c.delete_multi(['m1', 'm2']) is True
stats = c.stats()[addr]
assert int(stats['auth_cmds']) >= 1, stats
assert c.flush_all() is True
assert c.get('n') is None
bad = bmemcached.Client((addr,), user, 'wrong')
try:
    bad.get('n')
except bmemcached.exceptions.MemcachedException as e:
    assert e.code == 0x20, e
else:
    raise AssertionError('bad password accepted')
print('ok')
`

// TestBmemcachedClient drives python-binary-memcached (what oslo.cache and
// keystonemiddleware use with memcache_sasl_enabled) against our server
// with SASL on.
func TestBmemcachedClient(t *testing.T) {
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import bmemcached").Run(); err != nil {
		if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("bmemcached not importable by %s: %v", py, err)
		}
		t.Skipf("bmemcached not importable by %s: %v", py, err)
	}
	forEachTarget(t, serverOpts{sasl: true}, func(t *testing.T, addr string) {
		out, err := exec.Command(py, "-c", bmemcachedScript, addr, "user", "secret").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("bmemcached: %v\n%s", err, out)
		}
	})
}
