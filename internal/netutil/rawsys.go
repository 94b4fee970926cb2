//go:build unix

package netutil

import (
	"syscall"
	"unsafe"
)

// RawRead and RawWrite are read(2) and write(2) on a non-blocking socket
// made with syscall.RawSyscall, without the runtime's entersyscall and
// exitsyscall: they never wait, and a P handed to another thread during a
// long loopback write (the runtime's monitor does that after 20 us "in a
// system call"), with the monitor woken to do it, costs more than the
// call. The cache's event loops and raw connections and the broker's
// plain sockets use them. Only for non-blocking descriptors; b must not
// be empty.
func RawRead(fd uintptr, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), e
}

// RawWrite: see RawRead.
func RawWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	return int(n), e
}
