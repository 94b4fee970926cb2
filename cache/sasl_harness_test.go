package cache

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// writePasswordFile writes saslUsers in the MEMCACHED_SASL_PWDB format.
func writePasswordFile(t testing.TB) string {
	t.Helper()
	var lines []string
	for u, p := range saslUsers {
		lines = append(lines, u+":"+p)
	}
	sort.Strings(lines)
	path := filepath.Join(t.TempDir(), "pwdb")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// saslConf builds a Cyrus SASL configuration for Debian's memcached -S:
// a sasldb made with saslpasswd2 (package sasl2-bin) and a memcached.conf
// allowing PLAIN. It returns the environment memcached needs, or skips
// the test when saslpasswd2 is missing.
func saslConf(t testing.TB) []string {
	t.Helper()
	bin, err := exec.LookPath("saslpasswd2")
	if err != nil {
		if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
			t.Fatal("saslpasswd2 (sasl2-bin) not installed: cannot configure memcached -S (SUBSTRATE_REQUIRE_CLIENTS=1)")
		}
		t.Skip("saslpasswd2 (sasl2-bin) not installed: cannot configure memcached -S")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "sasldb2")
	for u, p := range saslUsers {
		cmd := exec.Command(bin, "-p", "-c", "-a", "memcached", "-f", db, u)
		cmd.Stdin = strings.NewReader(p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("saslpasswd2: %v: %s", err, out)
		}
	}
	conf := "mech_list: plain\nsasldb_path: " + db + "\n"
	if err := os.WriteFile(filepath.Join(dir, "memcached.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"SASL_CONF_PATH=" + dir}
}
