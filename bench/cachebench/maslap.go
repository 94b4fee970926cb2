package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The memaslap phase: libmemcached's load generator itself (Debian's
// libmemcached-tools installs it as memcaslap) with its default mix, 90%
// get / 10% set of small values, on maslapConns connections from
// maslapThreads threads, one request outstanding on each. Many
// connections with small requests is where a server's cost per wake-up
// shows. Fresh servers of every target; memcaslap runs against each in
// turn, in at least two slices of at most maslapSlice (A B B A ...), and each target's
// slices are added up. Server CPU is read from /proc/PID/stat around each
// slice.
const (
	maslapConns   = 50
	maslapThreads = 2
	maslapSlice   = 5 * time.Second
)

// maslapRun is what one memcaslap run reported, and the server's CPU
// time while it ran.
type maslapRun struct {
	ops  float64
	secs float64
	cpu  float64 // server CPU seconds (user + system)
}

var maslapLine = regexp.MustCompile(`(?m)^Run time: ([0-9.]+)s Ops: ([0-9]+) TPS: ([0-9]+)`)

// runMaslap runs memcaslap against addr for d (whole seconds).
func runMaslap(ctx context.Context, bin, addr string, d time.Duration, pid int) (maslapRun, error) {
	secs := max(1, int(d/time.Second))
	cmd := exec.CommandContext(ctx, bin, "-s", addr, "-T", strconv.Itoa(maslapThreads), "-c", strconv.Itoa(maslapConns),
		"-t", strconv.Itoa(secs)+"s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cpu0, err := procCPU(pid)
	if err != nil {
		return maslapRun{}, err
	}
	if err := cmd.Run(); err != nil {
		return maslapRun{}, fmt.Errorf("%s: %v: %s", bin, err, tail(out.String()))
	}
	cpu1, err := procCPU(pid)
	if err != nil {
		return maslapRun{}, err
	}
	m := maslapLine.FindAllStringSubmatch(out.String(), -1)
	if m == nil {
		return maslapRun{}, fmt.Errorf("%s printed no \"Run time\" line: %s", bin, tail(out.String()))
	}
	last := m[len(m)-1]
	rt, _ := strconv.ParseFloat(last[1], 64)
	ops, _ := strconv.ParseFloat(last[2], 64)
	if ops == 0 || rt == 0 {
		return maslapRun{}, fmt.Errorf("%s: no operations: %s", bin, tail(out.String()))
	}
	return maslapRun{ops: ops, secs: rt, cpu: cpu1 - cpu0}, nil
}

// benchMaslap runs the memaslap phase and records maslap_ops (ops/s) and
// maslap_cpu (server CPU µs per op) in figs.
func benchMaslap(ctx context.Context, bin string, ts []target, figs map[string]figures, dur time.Duration) error {
	scratch := map[string]figures{}
	for _, t := range ts {
		scratch[t.name] = figures{}
	}
	return withServers(ctx, ts, scratch, func(ss []*server) error {
		slices := max(2, int((dur+maslapSlice-1)/maslapSlice))
		slice := max(time.Second, dur/time.Duration(slices))
		sums := make([]maslapRun, len(ss))
		// A short unmeasured run each first: memcaslap's first seconds
		// fill the cache with its keys.
		for _, s := range ss {
			if _, err := runMaslap(ctx, bin, s.addr, time.Second, s.Cmd.Process.Pid); err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
		}
		for k := 0; k < slices && ctx.Err() == nil; k++ {
			for j := range ss {
				i := j
				if k%2 == 1 {
					i = len(ss) - 1 - j
				}
				r, err := runMaslap(ctx, bin, ss[i].addr, slice, ss[i].Cmd.Process.Pid)
				if err != nil {
					return fmt.Errorf("%s: %w", ss[i].Name, err)
				}
				sums[i].ops += r.ops
				sums[i].secs += r.secs
				sums[i].cpu += r.cpu
			}
		}
		for i, s := range ss {
			f := figs[s.Name]
			f["maslap_ops"] = sums[i].ops / sums[i].secs
			f["maslap_cpu"] = sums[i].cpu * 1e6 / sums[i].ops
		}
		return ctx.Err()
	})
}

// procCPU is a process's user + system CPU time in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		s = "..." + s[len(s)-300:]
	}
	return s
}
