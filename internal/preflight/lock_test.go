package preflight

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestLockDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, LockName))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, %v", b, err)
	}
	// flock locks belong to the open file, so a second LockDir in the
	// same process conflicts as another process would.
	_, err = LockDir(dir)
	want := "data directory " + dir + " is in use by substrate pid " + strconv.Itoa(os.Getpid())
	if !errors.Is(err, ErrInUse) || err == nil || err.Error() != want {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	l.Unlock()
	l.Unlock() // idempotent
	l2, err := LockDir(dir)
	if err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	l2.Unlock()
}
