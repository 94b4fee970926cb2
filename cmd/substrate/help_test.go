package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/version"

	"substrate/internal/config"
	"substrate/internal/testkit"
)

// TestServeHelp: --help exits 0 and names every flag's environment
// variable and the config file.
func TestServeHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"substrate", "serve", arg}, &stdout, &stderr); code != 0 {
			t.Fatalf("serve %s: exit %d, stderr %q", arg, code, stderr.String())
		}
		out := stdout.String()
		want := []string{"Usage: substrate serve", defaultConfigFile, "SUBSTRATE_CONFIG", "JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "GOMEMLIMIT"}
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		new(serveFlags).register(fs)
		fs.VisitAll(func(f *flag.Flag) {
			want = append(want, "--"+f.Name, config.EnvName("SUBSTRATE", f.Name))
		})
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("serve %s output lacks %q", arg, w)
			}
		}
	}
}

// TestLogFormatRefused: a --log-format other than text or json stops
// startup with one line, whether it comes from the flag, the environment
// or the config file.
func TestLogFormatRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "substrate.yaml")
	if err := os.WriteFile(cfg, []byte("log-format: xml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "substrate serve: --log-format: unknown log format \"xml\" (want text or json)\n"
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{"flag", []string{"--log-format", "xml"}, ""},
		{"env", nil, "xml"},
		{"config", []string{"--config", cfg}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SUBSTRATE_LOG_FORMAT", tc.env)
			var stdout, stderr bytes.Buffer
			args := append([]string{"substrate", "serve", "--data-dir", filepath.Join(dir, "data")}, tc.args...)
			if code := run(context.Background(), args, &stdout, &stderr); code != 1 || stderr.String() != want {
				t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr.String(), want)
			}
		})
	}
}

// TestLogFormatJSON: serve --log-format json writes one JSON object a
// line, the ready line included.
func TestLogFormatJSON(t *testing.T) {
	var stderr testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	args := []string{"substrate", "serve", "--data-dir", t.TempDir(), "--host", "127.0.0.1", "--services", "memcached",
		"--memcached-port", strconv.Itoa(freePort(t)), "--log-format", "json", "--amqp-memory-high-watermark", "0"}
	go func() { done <- run(ctx, args, new(bytes.Buffer), &stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "substrate ready") {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d before ready: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready in 20 s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var ready bool
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q (%v)", l, err)
		}
		if m["time"] == nil || m["level"] == nil {
			t.Errorf("line lacks time or level: %q", l)
		}
		ready = ready || m["msg"] == "substrate ready" && m["services"] == "memcached"
	}
	if !ready {
		t.Errorf("no ready line with its attributes:\n%s", stderr.String())
	}
}

// TestEtcdHelpAndVersion: `substrate etcd --help` and `--version` answer
// as etcd does: usage on stderr, the flags on stdout as "  --flag 'default'"
// with an indented description, the version in etcd's four lines, exit 0.
// Against Debian's etcd (3.4) when installed: the same shape, and the
// lines of flags whose meaning and default did not change are the same.
func TestEtcdHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"substrate", "etcd", "--version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--version: exit %d, stderr %q", code, stderr.String())
	}
	wantVersion := "etcd Version: " + version.Version + "\nGit SHA: " + version.GitSHA + "\nGo Version: " + runtime.Version() +
		"\nGo OS/Arch: " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if stdout.String() != wantVersion || stderr.Len() != 0 {
		t.Errorf("--version: stdout %q stderr %q; want %q", stdout.String(), stderr.String(), wantVersion)
	}

	stdout.Reset()
	stderr.Reset()
	// Installed as etcd, -h works too.
	if code := run(context.Background(), []string{"/usr/lib/substrate/bin/etcd", "-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("-h: exit %d, stderr %q", code, stderr.String())
	}
	ours := stdout.String()
	checkEtcdHelpShape(t, "substrate", ours, stderr.String())
	for _, f := range []string{"name", "listen-client-urls", "initial-cluster", "initial-cluster-state", "cert-file", "log-level"} {
		if !strings.Contains(ours, "  --"+f+" '") {
			t.Errorf("help lacks --%s", f)
		}
	}

	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("SUBSTRATE_REQUIRE_CLIENTS") == "1" {
			t.Fatal("Debian's etcd (etcd-server) is not installed")
		}
		t.Skip("Debian's etcd (etcd-server) not installed: comparison skipped")
	}
	var rOut, rErr bytes.Buffer
	cmd := exec.Command(etcdBin, "--help")
	cmd.Stdout, cmd.Stderr = &rOut, &rErr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s --help: %v", etcdBin, err)
	}
	checkEtcdHelpShape(t, "etcd", rOut.String(), rErr.String())
	vcmd := exec.Command(etcdBin, "--version")
	vout, err := vcmd.Output()
	if err != nil {
		t.Fatalf("%s --version: %v", etcdBin, err)
	}
	vre := regexp.MustCompile(`^etcd Version: \S+\nGit SHA: .+\nGo Version: go\S+\nGo OS/Arch: \S+/\S+\n$`)
	if !vre.Match(vout) || !vre.MatchString(wantVersion) {
		t.Errorf("version shapes differ:\netcd: %q\nours: %q", vout, wantVersion)
	}
	// Flags with the same default and description in 3.4 and 3.7.
	for _, f := range []string{"name", "data-dir", "listen-peer-urls", "initial-cluster-token", "heartbeat-interval"} {
		re := regexp.MustCompile(`(?m)^  --` + f + ` '.*'\n    .*\n`)
		theirs, mine := re.FindString(rOut.String()), re.FindString(ours)
		if theirs == "" || theirs != mine {
			t.Errorf("--%s:\netcd: %q\nours: %q", f, theirs, mine)
		}
	}
}

func checkEtcdHelpShape(t *testing.T, who, stdout, stderr string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "Usage:\n\n  etcd [flags]\n    Start an etcd server.\n\n  etcd --version\n") {
		t.Errorf("%s: usage on stderr = %q", who, stderr)
	}
	if !strings.Contains(stderr, "  etcd -h | --help\n") {
		t.Errorf("%s: usage lacks -h | --help: %q", who, stderr)
	}
	if !strings.HasPrefix(stdout, "\nMember:\n  --name 'default'\n    Human-readable name for this member.\n") {
		t.Errorf("%s: flags on stdout start %q", who, stdout[:min(len(stdout), 120)])
	}
	for _, s := range []string{"\nClustering:\n", "\nSecurity:\n", "\nLogging:\n"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("%s: no section %q", who, s)
		}
	}
}
