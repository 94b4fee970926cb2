package freeport

import (
	"net"
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
