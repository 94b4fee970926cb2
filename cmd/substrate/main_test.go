package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunDispatch(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		status     int
		out, inErr string
	}{
		{args: []string{"substrate"}, status: 2, inErr: "usage:"},
		{args: []string{"substrate", "version"}, status: 0, out: "substrate "},
		{args: []string{"substrate", "frobnicate"}, status: 2, inErr: `substrate frobnicate: unknown command "frobnicate"`},
		{args: []string{"substrate", "serve", "--nope"}, status: 2, inErr: "substrate serve: flag provided but not defined: -nope"},
		{args: []string{"/usr/local/bin/etcd", "--nope"}, status: 2, inErr: "substrate etcd: bad etcd flag: flag provided but not defined: -nope"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(context.Background(), tc.args, &stdout, &stderr)
		if status != tc.status || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.inErr) {
			t.Errorf("%v: status %d, stdout %q, stderr %q", tc.args, status, stdout.String(), stderr.String())
		}
	}
}

func TestVersionNamesEtcd(t *testing.T) {
	if v := versionString(); !strings.Contains(v, "etcd 3.7.3") {
		t.Fatalf("version = %q", v)
	}
}

func TestSelectServices(t *testing.T) {
	run, err := selectServices("etcd, amqp,,http")
	if err != nil || !run["etcd"] || !run["amqp"] || !run["http"] || len(run) != 3 {
		t.Fatalf("got %v %v", run, err)
	}
	if _, err := selectServices("etcd,kafka"); err == nil || !strings.Contains(err.Error(), `"kafka"`) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := selectServices(" , "); err == nil || !strings.Contains(err.Error(), "no service named") {
		t.Fatalf("empty: %v", err)
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	sigc := make(chan os.Signal, 2)
	stop := make(chan struct{})
	exited := make(chan int, 1)
	var stderr bytes.Buffer
	go handleSignals(sigc, func() { close(stop) }, &stderr, func(code int) { exited <- code }, time.Hour)

	sigc <- syscall.SIGTERM
	select {
	case <-stop:
	case <-time.After(5 * time.Second):
		t.Fatal("first signal did not ask for a graceful stop")
	}
	select {
	case <-exited:
		t.Fatal("first signal exited")
	case <-time.After(50 * time.Millisecond):
	}
	sigc <- syscall.SIGINT
	select {
	case code := <-exited:
		if code != 1 || !strings.Contains(stderr.String(), "second signal (interrupt)") {
			t.Fatalf("exit(%d), stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not exit")
	}
}

func TestStopGraceExits(t *testing.T) {
	sigc := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	var stderr bytes.Buffer
	go handleSignals(sigc, func() {}, &stderr, func(code int) { exited <- code }, 50*time.Millisecond)
	sigc <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 1 || !strings.Contains(stderr.String(), "still running 50ms after the stop signal") {
			t.Fatalf("exit(%d), stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a hung stop was not ended")
	}
}
