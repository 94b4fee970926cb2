package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// FS is the store's file layer: every file operation Disk performs goes
// through it, so tests can run the store on MemFS, which fails writes on
// demand and forgets what was not synced at a simulated crash. OSFS is the
// real one.
type FS interface {
	// MkdirAll creates dir and its parents.
	MkdirAll(dir string) error
	// Lock creates path if needed and takes an exclusive lock on it for
	// this process, failing at once if another holds it; Close releases.
	Lock(path string) (io.Closer, error)
	// OpenFile opens path with os.O_* flags (O_RDWR, O_WRONLY, O_CREATE,
	// O_EXCL, O_TRUNC), permission 0600 when it creates: messages are
	// the tenants' data (etcd's files are 0600 and its directories 0700
	// too).
	OpenFile(path string, flag int) (File, error)
	// OpenDir opens a directory so that Sync makes its entries (files
	// created and removed in it) durable.
	OpenDir(dir string) (File, error)
	// ReadDir returns the names in dir.
	ReadDir(dir string) ([]string, error)
	// ReadFile returns path's contents.
	ReadFile(path string) ([]byte, error)
	// Remove removes path; fs.ErrNotExist if it is not there.
	Remove(path string) error
}

// File is an open file of an FS.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's contents durable (fsync); for a directory,
	// its entries.
	Sync() error
	Truncate(size int64) error
	Close() error
	Name() string
	// Size returns the file's current size.
	Size() (int64, error)
}

// OSFS is the operating system's file layer.
type OSFS struct{}

func (OSFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

func (OSFS) Lock(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil // closing releases the flock
}

func (OSFS) OpenFile(path string, flag int) (File, error) {
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) OpenDir(dir string) (File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (OSFS) ReadDir(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(des))
	for i, de := range des {
		names[i] = de.Name()
	}
	return names, nil
}

func (OSFS) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (OSFS) Remove(path string) error { return os.Remove(path) }

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// OSFile returns the *os.File behind a File of OSFS (nil for another FS),
// for test hooks that need the real file.
func OSFile(f File) *os.File {
	if of, ok := f.(osFile); ok {
		return of.File
	}
	return nil
}

// truncate cuts path to size and syncs it.
func truncate(fsys FS, path string, size int64) error {
	f, err := fsys.OpenFile(path, os.O_RDWR)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("store: truncate %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", path, err)
	}
	return nil
}

// removeIfThere removes path, not minding that it is already gone.
func removeIfThere(fsys FS, path string) error {
	if err := fsys.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
