package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMakeRunPassesArgs: `make run ARGS="..."` hands ARGS to serve, for a
// controller where the real daemons still hold the default ports (make -n:
// printed, not run, so that bin/substrate is not rebuilt under the tests
// that use it).
func TestMakeRunPassesArgs(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "run", `ARGS=--amqp-port 5673 --memcached-options "-m 64"`).CombinedOutput()
	if err != nil {
		t.Fatalf("make -n run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "\n./bin/substrate serve --amqp-port 5673 --memcached-options \"-m 64\"\n") {
		t.Errorf("make -n run printed:\n%s", out)
	}
	out, err = exec.Command("make", "-n", "-C", "../..", "run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\n./bin/substrate serve \n") {
		t.Errorf("make -n run without ARGS: %v\n%s", err, out)
	}
}
