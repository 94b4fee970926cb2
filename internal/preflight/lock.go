package preflight

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// LockName is the lock file a process keeps in each data directory it
// uses, holding its PID.
const LockName = "substrate.lock"

// ErrInUse marks a data directory another process holds.
var ErrInUse = errors.New("data directory in use")

type inUseError struct{ msg string }

func (e inUseError) Error() string        { return e.msg }
func (e inUseError) Is(target error) bool { return target == ErrInUse }

// DirLock is an exclusive lock on a data directory, held until Unlock or
// the process's exit (the kernel drops a flock with its last descriptor,
// so a crashed holder never leaves a stale lock).
type DirLock struct{ f *os.File }

// LockDir creates dir if needed and locks it without waiting: another
// process holding it is an error naming that process,
// "data directory DIR is in use by substrate pid N", which wraps ErrInUse.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, unwrapPath(err))
	}
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: lock file: %w", dir, unwrapPath(err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil && pid > 0 {
				holder = "substrate pid " + strconv.Itoa(pid)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, inUseError{"data directory " + dir + " is in use by " + holder}
		}
		return nil, fmt.Errorf("data dir %s: lock %s: %w", dir, path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s: lock file: %w", dir, unwrapPath(err))
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the lock; the file stays (removing it would let a
// third process lock a new file while a second holds the old one).
func (l *DirLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}
