package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"substrate/cache"
)

// TestCacheSecretsWarned: a SASL password file or a -Z ssl_key readable
// by others gets one warning each; owner-only files get none.
func TestCacheSecretsWarned(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	check := func(cfg cache.Config, want ...string) {
		t.Helper()
		var buf bytes.Buffer
		warnCacheSecrets(slog.New(slog.NewTextHandler(&buf, nil)), cfg)
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if buf.Len() == 0 {
			lines = nil
		}
		if len(lines) != len(want) {
			t.Fatalf("warnings %q, want %d", lines, len(want))
		}
		for i, w := range want {
			if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], "level=WARN") {
				t.Errorf("warning %q lacks %q", lines[i], w)
			}
		}
	}
	open, closed := write("open", 0o644), write("closed", 0o600)
	check(cache.Config{SASLPasswordFile: open, TLS: &cache.TLSConfig{Key: open}}, "SASL password file", "ssl_key")
	check(cache.Config{SASLPasswordFile: closed, TLS: &cache.TLSConfig{Key: closed}})
	check(cache.Config{})
}
