package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// MemFS is an in-memory FS for tests. It keeps, per file, the bytes
// written and the bytes its last successful Sync made durable, and per
// directory the entries its last Sync made durable. Crash forgets
// everything that was not made durable, as a power loss does: unsynced
// bytes of every file, files created since their directory's last sync,
// and it brings back files removed since then. Fault, if set, fails
// operations on demand (ENOSPC, EIO); a failed write still applies the
// first half of its bytes, as a torn write would.
type MemFS struct {
	mu      sync.Mutex
	gen     int               // bumped by Crash: files opened before it fail
	names   map[string]*inode // current directory entries, by path
	durable map[string]*inode // entries as of each directory's last sync
	dirs    map[string]bool   // directories (always durable)
	locks   map[string]*inode // held locks
	fault   func(op, path string) error
	counts  map[string]int // operations done, by op
}

type inode struct {
	data   []byte
	synced []byte
}

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS {
	return &MemFS{names: map[string]*inode{}, durable: map[string]*inode{}, dirs: map[string]bool{},
		locks: map[string]*inode{}, counts: map[string]int{}}
}

// ErrCrashed is returned by a file opened before MemFS.Crash.
var ErrCrashed = errors.New("memfs: file from before a crash")

// SetFault installs f, called before each operation with its name
// ("open", "write", "sync", "syncdir", "truncate", "remove") and path; a
// non-nil result fails the operation. nil removes it.
func (m *MemFS) SetFault(f func(op, path string) error) {
	m.mu.Lock()
	m.fault = f
	m.mu.Unlock()
}

// Count returns how many operations op succeeded.
func (m *MemFS) Count(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[op]
}

// Crash loses what was not durable. Files opened before it fail
// afterwards (ErrCrashed) and locks are released: the store that had them
// open is dead.
func (m *MemFS) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.names = map[string]*inode{}
	for p, ino := range m.durable {
		m.names[p] = ino
	}
	for _, ino := range m.names {
		ino.data = bytes.Clone(ino.synced)
	}
	m.locks = map[string]*inode{}
}

// Files returns the current file names and sizes, for test reports.
func (m *MemFS) Files() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for p, ino := range m.names {
		out[p] = len(ino.data)
	}
	return out
}

// failLocked applies the fault hook.
func (m *MemFS) failLocked(op, path string) error {
	if m.fault == nil {
		return nil
	}
	if err := m.fault(op, path); err != nil {
		return &fs.PathError{Op: op, Path: path, Err: err}
	}
	return nil
}

func (m *MemFS) MkdirAll(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		m.dirs[d] = true
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (m *MemFS) Lock(path string) (io.Closer, error) {
	f, err := m.OpenFile(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mf := f.(*memFile)
	if m.locks[path] != nil {
		return nil, &fs.PathError{Op: "flock", Path: path, Err: syscall.EWOULDBLOCK}
	}
	m.locks[path] = mf.ino
	return closerFunc(func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if mf.gen == m.gen && m.locks[path] == mf.ino {
			delete(m.locks, path)
		}
		return nil
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (m *MemFS) OpenFile(path string, flag int) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	path = filepath.Clean(path)
	if !m.dirs[filepath.Dir(path)] {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if err := m.failLocked("open", path); err != nil {
		return nil, err
	}
	ino := m.names[path]
	switch {
	case ino != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrExist}
	case ino == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	case ino == nil:
		ino = &inode{}
		m.names[path] = ino
	}
	if flag&os.O_TRUNC != 0 {
		ino.data = ino.data[:0:0]
	}
	m.counts["open"]++
	return &memFile{fs: m, ino: ino, name: path, gen: m.gen}, nil
}

func (m *MemFS) OpenDir(dir string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir = filepath.Clean(dir)
	if !m.dirs[dir] {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: fs.ErrNotExist}
	}
	return &memFile{fs: m, name: dir, gen: m.gen, dir: true}, nil
}

func (m *MemFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir = filepath.Clean(dir)
	if !m.dirs[dir] {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	var names []string
	for p := range m.names {
		if filepath.Dir(p) == dir {
			names = append(names, filepath.Base(p))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (m *MemFS) ReadFile(path string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino := m.names[filepath.Clean(path)]
	if ino == nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return bytes.Clone(ino.data), nil
}

func (m *MemFS) Remove(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	path = filepath.Clean(path)
	if err := m.failLocked("remove", path); err != nil {
		return err
	}
	if m.names[path] == nil {
		return &fs.PathError{Op: "remove", Path: path, Err: fs.ErrNotExist}
	}
	delete(m.names, path)
	m.counts["remove"]++
	return nil
}

// memFile is an open file (or directory) of a MemFS.
type memFile struct {
	fs     *MemFS
	ino    *inode
	name   string
	gen    int
	dir    bool
	closed bool
}

func (f *memFile) checkLocked() error {
	if f.closed {
		return fs.ErrClosed
	}
	if f.gen != f.fs.gen {
		return ErrCrashed
	}
	return nil
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return 0, err
	}
	err := f.fs.failLocked("write", f.name)
	n := len(p)
	if err != nil {
		n = len(p) / 2 // torn
	}
	if end := off + int64(n); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p[:n])
	if err == nil {
		f.fs.counts["write"]++
	}
	return n, err
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return err
	}
	if f.dir {
		if err := f.fs.failLocked("syncdir", f.name); err != nil {
			return err
		}
		for p := range f.fs.durable {
			if filepath.Dir(p) == f.name {
				delete(f.fs.durable, p)
			}
		}
		for p, ino := range f.fs.names {
			if filepath.Dir(p) == f.name {
				f.fs.durable[p] = ino
			}
		}
		f.fs.counts["syncdir"]++
		return nil
	}
	if err := f.fs.failLocked("sync", f.name); err != nil {
		return err
	}
	f.ino.synced = bytes.Clone(f.ino.data)
	f.fs.counts["sync"]++
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return err
	}
	if err := f.fs.failLocked("truncate", f.name); err != nil {
		return err
	}
	if size <= int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.checkLocked(); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return fs.ErrClosed
	}
	f.closed = true
	return nil
}

// String describes the file system, for test failures.
func (m *MemFS) String() string {
	return fmt.Sprint(m.Files())
}
