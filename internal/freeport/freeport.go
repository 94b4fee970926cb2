// Package freeport picks loopback TCP ports for tests and benches to give
// to the servers they start.
//
// A port the kernel picked for a listen on port 0 comes from the
// ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default),
// the same range every outgoing connection and every other port-0 listen
// on the machine draws from. Closed and handed to a server a moment later,
// it was sometimes taken in between by one of those (CI failed on "https
// port: bind: address already in use"). Ports here come from below that
// range, checked free on 127.0.0.1 and ::1, never twice in one process,
// and reserved across processes (go test runs packages in parallel): a
// process takes a port only if it holds the lock (flock) of the port's
// file in a directory under os.TempDir, which it keeps until it exits.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// The range ports are picked from, [low, high): below the kernel's
// ephemeral range and above most fixed service ports (variables for the
// test).
var low, high = 20000, 32768

// reserved are well-known ports in the range that a test may bind itself.
var reserved = map[int]bool{25672: true} // the broker peer port, RabbitMQ's inter-node port

var (
	mu    sync.Mutex
	given = map[int]bool{}
	locks []*os.File // held until the process exits
	dir   = filepath.Join(os.TempDir(), "substrate-freeport")
)

// Ports returns n distinct loopback TCP ports that were free when checked,
// that this process has not returned before and that no other process
// using this package holds.
func Ports(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	var ports []int
	start := rand.IntN(high - low)
	for i := 0; i < high-low && len(ports) < n; i++ {
		p := low + (start+i)%(high-low)
		if given[p] || reserved[p] || !free(p) || !lock(p) {
			continue
		}
		given[p] = true
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("freeport: only %d of %d ports free in %d-%d", len(ports), n, low, high-1)
	}
	return ports, nil
}

// Port returns one port as Ports does.
func Port() (int, error) {
	ps, err := Ports(1)
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// lock takes p's lock for the rest of this process's life, unless another
// process holds it. Without a usable directory it locks nothing and says
// yes: the bind check still applies.
func lock(p int) bool {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return err != syscall.EWOULDBLOCK
	}
	locks = append(locks, f)
	return true
}

// free reports whether p can be bound on 127.0.0.1 and, where the host has
// IPv6 loopback, on ::1.
func free(p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	if l6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(p))); err == nil {
		l6.Close()
	} else if l6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		// ::1 works but p is taken there.
		l6.Close()
		return false
	}
	return true
}
