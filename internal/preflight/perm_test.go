package preflight

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDirPermission(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := WritableDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("created %v, want 0700", fi.Mode().Perm())
	}
	if w := DirPermission(dir); w != "" {
		t.Errorf("private dir: %q", w)
	}
	os.Chmod(dir, 0o755)
	if w := DirPermission(dir); !strings.Contains(w, "-rwx------") || !strings.Contains(w, dir) || !strings.Contains(w, "drwxr-xr-x") {
		t.Errorf("0755 dir: %q", w)
	}
	if w := DirPermission(filepath.Join(dir, "missing")); w != "" {
		t.Errorf("missing dir: %q", w)
	}
}

func TestSecretFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pwdb")
	os.WriteFile(f, []byte("u:p\n"), 0o600)
	if w := SecretFile("SASL password file", f); w != "" {
		t.Errorf("0600: %q", w)
	}
	os.Chmod(f, 0o640)
	if w := SecretFile("SASL password file", f); !strings.Contains(w, f) || !strings.Contains(w, "-rw-r-----") {
		t.Errorf("0640: %q", w)
	}
}
