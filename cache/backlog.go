//go:build unix

package cache

import (
	"fmt"
	"net"
	"syscall"
)

// setBacklog sets l's listen(2) backlog to n (memcached -b). Go listens
// with the kernel's somaxconn; listening again on a listening socket only
// changes its backlog, which the kernel caps at somaxconn as memcached's
// own listen(2) call is.
func setBacklog(l net.Listener, n int) error {
	sc, ok := l.(syscall.Conn)
	if !ok {
		return fmt.Errorf("cache: listener %s has no descriptor for its backlog", l.Addr())
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), n) }); err != nil {
		return err
	}
	if lerr != nil {
		return fmt.Errorf("cache: listen backlog %d on %s: %w", n, l.Addr(), lerr)
	}
	return nil
}
