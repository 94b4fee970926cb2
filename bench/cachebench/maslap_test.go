package main

import (
	"os"
	"testing"
)

// TestMaslapLine: the figures are taken from memaslap's last "Run time"
// line (it prints one per statistics period and a final one).
func TestMaslapLine(t *testing.T) {
	out := "servers : 127.0.0.1:11211\nRun time: 1.0s Ops: 50 TPS: 50 Net_rate: 0.1M/s\nGet Statistics\n" +
		"Run time: 3.0s Ops: 104783 TPS: 33122 Net_rate: 37.0M/s\n"
	m := maslapLine.FindAllStringSubmatch(out, -1)
	if len(m) != 2 || m[1][1] != "3.0" || m[1][2] != "104783" {
		t.Fatalf("parsed %q", m)
	}
}

func TestProcCPU(t *testing.T) {
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	cpu, err := procCPU(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Fatalf("procCPU = %v, %v (x %d)", cpu, err, x)
	}
}
