package freeport

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

func TestPortsDistinctFreeAndOutsideEphemeral(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		ps, err := Ports(5)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p < low || p >= high || reserved[p] {
				t.Fatalf("port %d outside [%d, %d) or reserved", p, low, high)
			}
			if seen[p] {
				t.Fatalf("port %d returned twice", p)
			}
			seen[p] = true
		}
	}
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

func TestBusyPortIsNotFree(t *testing.T) {
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	if !free(p) {
		t.Fatalf("port %d just returned is not free", p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if free(p) {
		t.Fatalf("port %d held by a listener reported free", p)
	}
}

// TestLockedByAnotherProcessIsSkipped: a port whose lock another process
// holds is not returned. The other process is this test binary again
// (TestHelperHoldLocks), holding every lock of a 64-port window but one.
func TestLockedByAnotherProcessIsSkipped(t *testing.T) {
	oldDir, oldLow, oldHigh := dir, low, high
	defer func() { dir, low, high = oldDir, oldLow, oldHigh }()
	dir = t.TempDir()
	// A window of 64 ports with one the other process leaves alone.
	keep := -1
	for p := oldLow + 64; p < oldHigh-64; p++ {
		if !given[p] && !reserved[p] && free(p) {
			keep = p
			break
		}
	}
	low, high = keep-32, keep+32
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLocks$")
	cmd.Env = append(os.Environ(), "FREEPORT_HELPER_DIR="+dir, "FREEPORT_HELPER_KEEP="+strconv.Itoa(keep))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	p, err := Port()
	if err != nil {
		t.Fatal(err)
	}
	if p != keep {
		t.Fatalf("got port %d, want %d, the one the other process does not hold", p, keep)
	}
	if _, err := Port(); err == nil {
		t.Fatal("a port was returned while the other process holds all the rest")
	}
}

// TestHelperHoldLocks is the other process of
// TestLockedByAnotherProcessIsSkipped: it locks every port's file of the
// window but one,
// says so, and holds them until its stdin closes.
func TestHelperHoldLocks(t *testing.T) {
	d := os.Getenv("FREEPORT_HELPER_DIR")
	if d == "" {
		return // run by TestLockedByAnotherProcessIsSkipped only
	}
	dir = d
	keep, _ := strconv.Atoi(os.Getenv("FREEPORT_HELPER_KEEP"))
	for p := keep - 32; p < keep+32; p++ {
		if p != keep && !lock(p) {
			t.Fatalf("lock %d", p)
		}
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
}
