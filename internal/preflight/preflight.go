// Package preflight checks what a bad configuration would otherwise break
// half-way through startup: host names that do not resolve, ports already
// in use, data directories that cannot be written. It runs before anything
// listens.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Hosts turns a --host list (comma-separated IP addresses or host names)
// into IP addresses, resolving names such as "controller" or "localhost".
// The order is kept and duplicates dropped.
func Hosts(ctx context.Context, list string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(ip string) {
		if !seen[ip] {
			seen[ip] = true
			out = append(out, ip)
		}
	}
	for _, h := range strings.Split(list, ",") {
		h = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]"))
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			add(ip.String())
			continue
		}
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, h)
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", h, err)
		}
		for _, a := range addrs {
			add(a.IP.String())
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no host address given")
	}
	return out, nil
}

// Addrs joins every host with port, as "127.0.0.1:5672" and "[::1]:5672".
func Addrs(hosts []string, port int) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = net.JoinHostPort(h, strconv.Itoa(port))
	}
	return out
}

// Port is one address a service will listen on.
type Port struct {
	What string // e.g. "etcd client port"
	Addr string // host:port
}

// Ports checks that every address can be bound now, by binding and closing
// it. The error names the first one that cannot.
func Ports(ports []Port) error {
	for _, p := range ports {
		_, port, err := net.SplitHostPort(p.Addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", p.What, p.Addr, err)
		}
		if port == "0" {
			continue
		}
		l, err := net.Listen("tcp", p.Addr)
		if err != nil {
			return fmt.Errorf("%s: %w", p.What, err)
		}
		l.Close()
	}
	return nil
}

// WritableDir creates dir (mode 0700) if needed and checks that a file can
// be created in it.
func WritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, unwrapPath(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// unwrapPath drops the path an *os.PathError repeats, so the one-line
// message names the directory once.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s", pe.Op, filepath.Clean(pe.Path)+": "+pe.Err.Error())
	}
	return err
}
