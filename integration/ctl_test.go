package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// ctlRun runs the substrate binary under name (a symlink: rabbitmqctl or
// rabbitmq-diagnostics) with env and stdin, and returns its stdout,
// stderr and exit code.
func ctlRun(t *testing.T, bin string, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestRabbitMQCLINames runs the binary as rabbitmqctl and
// rabbitmq-diagnostics (symlinks, as the packages install them) against
// a running serve found through its config file: the client-side parts
// (files and stdin for definitions, wait's pid file, await_startup's
// retries, the unreachable node) and the process facts (listeners, port
// checks) that the in-process golden tests of internal/ctl do not see.
func TestRabbitMQCLINames(t *testing.T) {
	s := serve(t)
	dir := t.TempDir()
	ctl, diag := filepath.Join(dir, "rabbitmqctl"), filepath.Join(dir, "rabbitmq-diagnostics")
	for _, l := range []string{ctl, diag} {
		if err := os.Symlink(binary, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "substrate.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: "+s.dataDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"SUBSTRATE_CONFIG=" + cfg}

	out, errOut, code := ctlRun(t, diag, env, "", "check_running")
	if code != 0 || !strings.Contains(out, "is fully booted and running") {
		t.Fatalf("check_running: %d %q %q", code, out, errOut)
	}
	out, _, code = ctlRun(t, diag, env, "", "-q", "listeners")
	for _, p := range []int{s.amqpPort, s.clientPort, s.peerPort, s.memcachedPort, s.httpPort} {
		if code != 0 || !strings.Contains(out, "port: "+strconv.Itoa(p)+",") {
			t.Errorf("listeners (%d) lacks port %d:\n%s", code, p, out)
		}
	}
	out, errOut, code = ctlRun(t, diag, env, "", "check_port_connectivity")
	if code != 0 || !strings.Contains(out, "Successfully connected to ports") || !strings.Contains(out, strconv.Itoa(s.amqpPort)) {
		t.Errorf("check_port_connectivity: %d %q %q", code, out, errOut)
	}
	out, _, code = ctlRun(t, ctl, env, "", "--formatter", "json", "status")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["rabbitmq_version"] != "3.10.8" || st["data_directory"] != s.dataDir {
		t.Errorf("status json: %d %q", code, out)
	}
	// rabbitmqctl is not rabbitmq-diagnostics.
	if _, errOut, code := ctlRun(t, ctl, env, "", "check_running"); code != 64 || !strings.Contains(errOut, "Command 'check_running' not found") {
		t.Errorf("rabbitmqctl check_running: %d %q", code, errOut)
	}

	// Definitions: export to a file, import a changed copy from a file
	// and from stdin.
	defsFile := filepath.Join(dir, "defs.json")
	if out, errOut, code := ctlRun(t, ctl, env, "", "export_definitions", defsFile); code != 0 || !strings.Contains(out, "Exporting definitions in JSON to a file") {
		t.Fatalf("export_definitions: %d %q %q", code, out, errOut)
	}
	var defs map[string]any
	raw, _ := os.ReadFile(defsFile)
	if err := json.Unmarshal(raw, &defs); err != nil || defs["rabbitmq_version"] != "3.10.8" {
		t.Fatalf("exported definitions: %v %s", err, raw)
	}
	defs["vhosts"] = append(defs["vhosts"].([]any), map[string]any{"name": "from-file"})
	raw, _ = json.Marshal(defs)
	os.WriteFile(defsFile, raw, 0o600)
	if out, errOut, code := ctlRun(t, ctl, env, "", "import_definitions", defsFile); code != 0 {
		t.Fatalf("import_definitions FILE: %d %q %q", code, out, errOut)
	}
	stdinDefs := `{"vhosts":[{"name":"from-stdin"}],"policies":[{"vhost":"from-stdin","name":"ha","pattern":".*","apply-to":"all","definition":{"ha-mode":"all"},"priority":0}]}`
	if out, errOut, code := ctlRun(t, ctl, env, stdinDefs, "import_definitions", "-"); code != 0 {
		t.Fatalf("import_definitions -: %d %q %q", code, out, errOut)
	}
	out, _, _ = ctlRun(t, ctl, env, "", "-s", "list_vhosts")
	if !strings.Contains(out, "from-file\n") || !strings.Contains(out, "from-stdin\n") {
		t.Errorf("imported vhosts missing:\n%s", out)
	}
	if out, _, _ := ctlRun(t, ctl, env, "", "-s", "list_policies", "-p", "from-stdin"); !strings.Contains(out, "from-stdin\tha\t.*\tall\t{\"ha-mode\":\"all\"}\t0") {
		t.Errorf("imported policy missing:\n%s", out)
	}
	if out, _, _ := ctlRun(t, ctl, env, "", "export_definitions", "-"); !strings.Contains(out, `"from-stdin"`) || strings.HasSuffix(out, "\n") {
		t.Errorf("export_definitions -: %q", out)
	}

	// authenticate_user reads the password from stdin when not given.
	if out, errOut, code := ctlRun(t, ctl, env, "guest\n", "authenticate_user", "guest"); code != 0 || !strings.HasSuffix(out, "Success\n") {
		t.Errorf("authenticate_user with stdin: %d %q %q", code, out, errOut)
	}

	// close_connection by the pid list_connections shows.
	c, err := amqp091.DialConfig("amqp://guest:guest@127.0.0.1:"+strconv.Itoa(s.amqpPort)+"/", amqp091.Config{Properties: amqp091.Table{"connection_name": "cinder-volume:77"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	out, _, _ = ctlRun(t, ctl, env, "", "-s", "list_connections", "pid", "client_properties")
	m := regexp.MustCompile(`(<[^>]+>)\t[^\n]*"cinder-volume:77"`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("list_connections shows no pid for the named connection:\n%s", out)
	}
	if out, errOut, code := ctlRun(t, ctl, env, "", "close_connection", m[1], "maintenance"); code != 0 {
		t.Fatalf("close_connection %s: %d %q %q", m[1], code, out, errOut)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 || !strings.Contains(e.Reason, "maintenance") {
			t.Errorf("closed with %v, want 320 naming the reason", e)
		}
	case <-time.After(10 * time.Second):
		t.Error("connection still open after close_connection")
	}

	// wait: the pid file appears, the process runs, the node answers.
	pidFile := filepath.Join(dir, "substrate.pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(s.proc.cmd.Process.Pid)+"\n"), 0o644)
	if out, errOut, code := ctlRun(t, ctl, env, "", "wait", pidFile, "--timeout", "10"); code != 0 || !strings.Contains(out, "Applications 'rabbit_and_plugins' are running") {
		t.Errorf("wait: %d %q %q", code, out, errOut)
	}
	if out, errOut, code := ctlRun(t, ctl, env, "", "wait", filepath.Join(dir, "none.pid"), "--timeout", "1"); code != 75 || !strings.Contains(errOut, "timed out") {
		t.Errorf("wait for a missing pid file: %d %q %q", code, out, errOut)
	}

	// A node that does not answer: rabbitmqctl's exit code 69 and texts.
	none := []string{"SUBSTRATE_DATA_DIR=" + filepath.Join(dir, "nothing-here")}
	if out, errOut, code := ctlRun(t, diag, none, "", "check_running"); code != 69 || !strings.Contains(out, "Checking if RabbitMQ is running") || !strings.Contains(errOut, "unable to perform an operation on node") {
		t.Errorf("check_running, no server: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := ctlRun(t, ctl, none, "", "ping"); code != 69 || !strings.Contains(errOut, "Failed to connect and authenticate") {
		t.Errorf("ping, no server: %d %q", code, errOut)
	}
	t0 := time.Now()
	if _, _, code := ctlRun(t, ctl, none, "", "await_startup", "--timeout", "1"); code != 69 || time.Since(t0) > 15*time.Second {
		t.Errorf("await_startup, no server: code %d after %v", code, time.Since(t0))
	}
}

// TestDiagnosticsAlarm: a disk alarm (disk_free_limit above the free
// space) makes check_local_alarms and check_alarms fail with exit code 69
// naming it, as RabbitMQ's do, while check_running still passes.
func TestDiagnosticsAlarm(t *testing.T) {
	s := serve(t, "--amqp-disk-free-limit", "100000GB")
	diag := filepath.Join(t.TempDir(), "rabbitmq-diagnostics")
	if err := os.Symlink(binary, diag); err != nil {
		t.Fatal(err)
	}
	env := []string{"SUBSTRATE_DATA_DIR=" + s.dataDir}
	var out, errOut string
	var code int
	for deadline := time.Now().Add(15 * time.Second); ; {
		out, errOut, code = ctlRun(t, diag, env, "", "check_local_alarms")
		if code != 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code != 69 || !strings.Contains(out, "to report any local resource alarms") || !regexp.MustCompile(`^Error:\nFree disk space alarm on node rabbit@\S+\n$`).MatchString(errOut) {
		t.Fatalf("check_local_alarms under a disk alarm: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := ctlRun(t, diag, env, "", "check_alarms"); code != 69 || !strings.HasPrefix(errOut, "Free disk space alarm on node ") {
		t.Errorf("check_alarms: %d %q", code, errOut)
	}
	if out, _, code := ctlRun(t, diag, env, "", "-q", "alarms"); code != 0 || !strings.HasPrefix(out, "Free disk space alarm on node ") {
		t.Errorf("alarms: %d %q", code, out)
	}
	if _, _, code := ctlRun(t, diag, env, "", "check_running"); code != 0 {
		t.Errorf("check_running under an alarm: %d", code)
	}
}
