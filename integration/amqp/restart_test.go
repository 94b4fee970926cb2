package amqpit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"substrate/internal/rabbitmqtest"
)

// rabbitRestarter stops and starts again, on the same data directory,
// ports, node name and cookie, the rabbitmq-server that rabbitmqtest.Start
// started. rabbitmqtest has no restart of its own (its Stop removes the
// directory), so the restarter takes the environment the server was started
// with from the running Erlang VM (/proc/PID/environ; the PID from
// `rabbitmqctl eval 'os:getpid().'`), keeping only the variables that
// rabbitmqtest sets: the rest are derived by Debian's scripts, and some of
// them (RABBITMQ_ENV_LOADED) would change what the scripts do.
type rabbitRestarter struct {
	r    *rabbitmqtest.Server
	addr string

	mu     sync.Mutex
	env    []string // nil until the first restart
	dir    string
	cmd    *exec.Cmd     // the server started by the last restart; nil: r's own
	exited chan struct{} // closed when cmd has exited
	out    rabbitmqtest.Tail
}

// The environment variables rabbitmqtest.Start gives rabbitmq-server.
var rabbitEnvKeys = []string{
	"PATH", "HOME", "LANG", "LC_ALL",
	"RABBITMQ_NODENAME", "RABBITMQ_NODE_IP_ADDRESS", "RABBITMQ_NODE_PORT", "RABBITMQ_DIST_PORT",
	"RABBITMQ_CTL_DIST_PORT_MIN", "RABBITMQ_CTL_DIST_PORT_MAX", "ERL_EPMD_PORT", "ERL_EPMD_ADDRESS",
	"RABBITMQ_MNESIA_BASE", "RABBITMQ_LOG_BASE", "RABBITMQ_CONFIG_FILE", "RABBITMQ_ADVANCED_CONFIG_FILE",
	"RABBITMQ_ENABLED_PLUGINS_FILE", "RABBITMQ_PID_FILE", "RABBITMQ_CONF_ENV_FILE",
	"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "RABBITMQ_CTL_ERL_ARGS",
}

func newRabbitRestarter(r *rabbitmqtest.Server) *rabbitRestarter {
	return &rabbitRestarter{r: r, addr: r.Addr}
}

// vmPID asks the node for its OS process id.
func (rr *rabbitRestarter) vmPID(ctx context.Context) (int, error) {
	out, err := rr.r.Ctl(ctx, "eval", "os:getpid().")
	if err != nil {
		return 0, fmt.Errorf("rabbitmqctl eval os:getpid(): %v\n%s", err, out)
	}
	pid, err := strconv.Atoi(strings.Trim(strings.TrimSpace(out), `"`))
	if err != nil {
		return 0, fmt.Errorf("rabbitmqctl eval os:getpid() printed %q", out)
	}
	return pid, nil
}

// captureEnv reads the server's start environment from its VM (once).
func (rr *rabbitRestarter) captureEnv(pid int) error {
	if rr.env != nil {
		return nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return fmt.Errorf("reading the RabbitMQ VM's environment: %w", err)
	}
	vars := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var env []string
	for _, k := range rabbitEnvKeys {
		v, ok := vars[k]
		if !ok {
			return fmt.Errorf("the RabbitMQ VM's environment lacks %s: rabbitmqtest.Start changed, update rabbitEnvKeys", k)
		}
		env = append(env, k+"="+v)
	}
	rr.env = env
	rr.dir = filepath.Dir(vars["RABBITMQ_MNESIA_BASE"])
	return nil
}

// restart runs `rabbitmqctl stop`, waits for the VM to exit, starts
// rabbitmq-server again with the same environment and waits for AMQP and
// `rabbitmqctl await_startup`.
func (rr *rabbitRestarter) restart(ctx context.Context) (string, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	t0 := time.Now()
	pid, err := rr.vmPID(ctx)
	if err != nil {
		return "", err
	}
	if err := rr.captureEnv(pid); err != nil {
		return "", err
	}
	if out, err := rr.r.Ctl(ctx, "stop"); err != nil {
		return "", fmt.Errorf("rabbitmqctl stop: %v\n%s", err, out)
	}
	if err := waitGone(ctx, pid, 60*time.Second); err != nil {
		return "", err
	}
	if rr.cmd != nil {
		<-rr.exited
	}
	stopped := time.Since(t0)

	cred, err := rabbitCredential()
	if err != nil {
		return "", err
	}
	rr.out.Write([]byte("==== amqpit: restarting rabbitmq-server on the same data directory ====\n"))
	cmd := exec.Command(rabbitmqtest.ServerScript)
	cmd.Dir = rr.dir
	cmd.Env = rr.env
	cmd.Stdout, cmd.Stderr = &rr.out, &rr.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting rabbitmq-server again: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	rr.cmd, rr.exited = cmd, exited
	t1 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	if err := rabbitmqtest.WaitAMQP(ctx, rr.addr, exited, 250*time.Millisecond); err != nil {
		return "", fmt.Errorf("rabbitmq after the restart: %v\n%s", err, rabbitmqtest.LastLines(rr.logs(), 40))
	}
	if out, err := rr.r.Ctl(ctx, "await_startup", "--timeout", "60"); err != nil {
		return "", fmt.Errorf("rabbitmqctl await_startup after the restart: %v\n%s", err, out)
	}
	return fmt.Sprintf("rabbitmq stopped in %v, started again in %v",
		stopped.Round(10*time.Millisecond), time.Since(t1).Round(10*time.Millisecond)), nil
}

// stop stops a server started by restart, then lets rabbitmqtest stop the
// rest (its own server process has already exited, so it only stops epmd
// and removes the directory).
func (rr *rabbitRestarter) stop() {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if rr.cmd != nil {
		select {
		case <-rr.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			rr.r.Ctl(ctx, "stop")
			cancel()
			select {
			case <-rr.exited:
			case <-time.After(20 * time.Second):
				syscall.Kill(-rr.cmd.Process.Pid, syscall.SIGTERM)
				select {
				case <-rr.exited:
				case <-time.After(10 * time.Second):
					syscall.Kill(-rr.cmd.Process.Pid, syscall.SIGKILL)
					<-rr.exited
				}
			}
		}
	}
	rr.r.Stop()
}

// logs is the server's output and log files, including the output of the
// server started by the last restart.
func (rr *rabbitRestarter) logs() string {
	return rr.r.Logs(60) + "\n" + rr.out.String()
}

// rabbitCredential is the rabbitmq user's, as rabbitmqtest uses it: nil
// when this process already runs as that user.
func rabbitCredential() (*syscall.Credential, error) {
	if os.Getuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// waitGone waits until process pid no longer exists (or is a zombie).
func waitGone(ctx context.Context, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if s := string(b); strings.Contains(s[strings.LastIndexByte(s, ')')+1:], " Z ") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rabbitmq VM (pid %d) still running %v after rabbitmqctl stop", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
