// Package freeport picks loopback TCP ports for tests and benches to give
// to the servers they start.
//
// A port the kernel picked for a listen on port 0 comes from the
// ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by default),
// the same range every outgoing connection and every other port-0 listen
// on the machine draws from. Closed and handed to a server a moment later,
// it was sometimes taken in between by one of those (CI failed on "https
// port: bind: address already in use"). Ports here come from below that
// range, at random, checked free on 127.0.0.1 and ::1, and never twice in
// one process.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// The range ports are picked from: below the kernel's ephemeral range and
// above most fixed service ports.
const (
	low  = 20000
	high = 32768
)

// reserved are well-known ports in the range that a test may bind itself.
var reserved = map[int]bool{25672: true} // the broker peer port, RabbitMQ's inter-node port

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Ports returns n distinct loopback TCP ports that were free when checked
// and that this process has not returned before.
func Ports(n int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("freeport: no free port in %d-%d after %d tries", low, high-1, tries)
		}
		p := low + rand.IntN(high-low)
		if given[p] || reserved[p] || !free(p) {
			continue
		}
		given[p] = true
		ports = append(ports, p)
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
