package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"substrate/internal/logging"
	"substrate/internal/testkit"
)

func freePort(t *testing.T) int {
	return testkit.FreePort(t)
}

// TestEtcdFatalStopsTheOthersFirst runs serve in a child process (this
// test binary, TestHelperServeThenFatal) that logs a zap Fatal entry
// through an etcd-style logger once serve is ready: the broker's store
// must be closed cleanly (CLEAN written) and the listeners closed before
// zap's os.Exit(1).
func TestEtcdFatalStopsTheOthersFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	amqpPort := freePort(t)
	args := []string{"serve", "--host", "127.0.0.1", "--data-dir", dir, "--services", "etcd,amqp,memcached",
		"--etcd-client-port", strconv.Itoa(freePort(t)), "--etcd-peer-port", strconv.Itoa(freePort(t)),
		"--amqp-port", strconv.Itoa(amqpPort), "--memcached-port", strconv.Itoa(freePort(t))}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperServeThenFatal$")
	cmd.Env = append(os.Environ(), "SUBSTRATE_TEST_HELPER="+strings.Join(args, "\x1f"), "SUBSTRATE_TEST_AMQP="+strconv.Itoa(amqpPort))
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	s := string(out)
	if code != 1 {
		t.Fatalf("exit %d (%v), want 1 (zap's fatal exit):\n%s", code, err, s)
	}
	fatalAt := strings.Index(s, "injected etcd fatal")
	stopAt := strings.Index(s, "etcd failed fatally; stopping the other services")
	doneAt := strings.Index(s, "emergency stop finished")
	if fatalAt < 0 || stopAt < fatalAt || doneAt < stopAt {
		t.Fatalf("want the fatal line, then the emergency stop, then its end:\n%s", s)
	}
	if _, err := os.Stat(filepath.Join(dir, "broker", "CLEAN")); err != nil {
		t.Errorf("broker store not closed cleanly: %v\n%s", err, s)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(amqpPort), time.Second); err == nil {
		c.Close()
		t.Error("amqp port still accepts")
	}
}

// TestHelperServeThenFatal is the child of TestEtcdFatalStopsTheOthersFirst.
func TestHelperServeThenFatal(t *testing.T) {
	spec := os.Getenv("SUBSTRATE_TEST_HELPER")
	if spec == "" {
		t.Skip("helper process only")
	}
	go func() {
		addr := "127.0.0.1:" + os.Getenv("SUBSTRATE_TEST_AMQP")
		for {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The same zap core etcd's logger is built on.
		lg := logging.Zap(slog.NewTextHandler(os.Stderr, nil).WithAttrs([]slog.Attr{slog.String("service", "etcd")}), slog.LevelInfo, nil).Named("etcd")
		lg.Fatal("injected etcd fatal", zap.String("path", "member/snap/db"))
	}()
	run(context.Background(), append([]string{"substrate"}, strings.Split(spec, "\x1f")...), os.Stderr, os.Stderr)
	t.Fatal("serve returned before the fatal entry")
}
