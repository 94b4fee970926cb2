package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	clientv3 "go.etcd.io/etcd/client/v3"

	"substrate/cache"
	"substrate/internal/faults"
)

// healthTimeout bounds each service's check; they run in parallel, so a
// /healthz answers within about this long even when every service hangs.
const healthTimeout = 2 * time.Second

// serviceCheck is one enabled service's health check: nil when healthy.
type serviceCheck struct {
	name  string
	check func(ctx context.Context) error
}

// health checks every enabled service (/healthz and the systemd
// watchdog).
type health struct {
	log    *slog.Logger
	checks []serviceCheck
}

// Failures runs the checks in parallel, each within healthTimeout, and
// returns one line per failing service ("amqp: disk alarm ..."), in the
// order the services start; none: healthy. This is /healthz: a degraded
// service (an alarm, no etcd quorum) counts as failing.
func (h *health) Failures(ctx context.Context) []string {
	var out []string
	for _, f := range h.run(ctx) {
		out = append(out, f.line)
	}
	return out
}

// Unresponsive is Failures without the degraded services: what the
// systemd watchdog acts on. A broker under a resource alarm or an etcd
// member without quorum is working as designed (RabbitMQ keeps running
// and blocks publishers; etcd waits for its peers), and a restart would
// only lose transient messages and connections.
func (h *health) Unresponsive(ctx context.Context) []string {
	var out []string
	for _, f := range h.run(ctx) {
		if !f.degraded {
			out = append(out, f.line)
		}
	}
	return out
}

// degradedError is a check's answer for a service that answers but
// cannot do all of its work (an alarm, no quorum).
type degradedError struct{ err error }

func (d degradedError) Error() string { return d.err.Error() }
func (d degradedError) Unwrap() error { return d.err }

type failure struct {
	line     string
	degraded bool
}

func (h *health) run(ctx context.Context) []failure {
	if h == nil {
		return nil
	}
	out := make([]failure, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, healthTimeout)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				defer faults.Recover(h.log, faults.HTTP, "health check "+c.name, func(v any) {
					done <- fmt.Errorf("check panicked: %v", v)
				})
				done <- c.check(cctx)
			}()
			var err error
			select {
			case err = <-done:
			case <-cctx.Done():
				err = fmt.Errorf("no answer within %v", healthTimeout)
			}
			if err != nil {
				var d degradedError
				out[i] = failure{line: c.name + ": " + err.Error(), degraded: errors.As(err, &d)}
			}
		}()
	}
	wg.Wait()
	var failed []failure
	for _, f := range out {
		if f.line != "" {
			failed = append(failed, f)
		}
	}
	return failed
}

// etcdCheck is a linearizable read (the default for Get): it goes
// through the leader, so it fails without a quorum, as etcd's own
// /health does. When it fails but a serializable (local) read answers,
// the member is alive without a quorum: degraded.
func etcdCheck(kv clientv3.KV) serviceCheck {
	return serviceCheck{"etcd", func(ctx context.Context) error {
		lctx, cancel := context.WithTimeout(ctx, healthTimeout*3/4)
		_, err := kv.Get(lctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("linearizable read failed: %w", err)
		if _, serr := kv.Get(ctx, "health", clientv3.WithSerializable()); serr == nil {
			return degradedError{fmt.Errorf("%w (the member answers locally: no quorum)", err)}
		}
		return err
	}}
}

// checkedBroker is what brokerCheck reads of the broker (*broker.Server,
// or a cluster node's active broker with the node's listeners).
type checkedBroker interface {
	Addrs() []net.Addr
	TLSAddrs() []net.Addr
	DiskAlarm() bool
	DiskFree() uint64
	DiskFreeLimit() uint64
	MemoryAlarm() bool
	MemoryUsed() uint64
	MemoryHighWatermark() uint64
}

// brokerCheck dials the broker's first listener and reports its alarms,
// which block every publisher (RabbitMQ's check_local_alarms).
func brokerCheck(b checkedBroker) serviceCheck {
	return serviceCheck{"amqp", func(ctx context.Context) error {
		addrs := b.Addrs()
		if len(addrs) == 0 {
			addrs = b.TLSAddrs()
		}
		if len(addrs) == 0 {
			return errors.New("not listening")
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, addrs[0].Network(), addrs[0].String())
		if err != nil {
			return fmt.Errorf("not accepting: %w", err)
		}
		c.Close()
		var alarms []string
		if b.DiskAlarm() {
			alarms = append(alarms, fmt.Sprintf("disk alarm in effect (free %d bytes, limit %d bytes)", b.DiskFree(), b.DiskFreeLimit()))
		}
		if b.MemoryAlarm() {
			alarms = append(alarms, fmt.Sprintf("memory alarm in effect (used %d bytes, high watermark %d bytes)", b.MemoryUsed(), b.MemoryHighWatermark()))
		}
		if len(alarms) > 0 {
			return degradedError{errors.New(strings.Join(alarms, "; "))}
		}
		return nil
	}}
}

// cacheCheck asks the cache for its version over a plain listener, in the
// protocol that listener speaks (binary VERSION is allowed before SASL
// authentication, as in memcached). With TLS listeners only, it checks
// that the listener accepts: the handshake may require a client
// certificate.
func cacheCheck(c *cache.Server) serviceCheck {
	return serviceCheck{"memcached", func(ctx context.Context) error {
		addr, tlsOn, binary, ok := c.ProbeTarget()
		if !ok {
			return errors.New("not listening")
		}
		var d net.Dialer
		nc, err := d.DialContext(ctx, addr.Network(), addr.String())
		if err != nil {
			return fmt.Errorf("not accepting: %w", err)
		}
		defer nc.Close()
		if tlsOn {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok {
			nc.SetDeadline(dl)
		}
		if binary {
			// Request header: magic 0x80, opcode 0x0b (version), the rest 0.
			req := make([]byte, 24)
			req[0], req[1] = 0x80, 0x0b
			if _, err := nc.Write(req); err != nil {
				return fmt.Errorf("version: %w", err)
			}
			resp := make([]byte, 24)
			if _, err := io.ReadFull(nc, resp); err != nil {
				return fmt.Errorf("version: %w", err)
			}
			if resp[0] != 0x81 || resp[1] != 0x0b || resp[6] != 0 || resp[7] != 0 {
				return fmt.Errorf("version: unexpected reply % x", resp[:8])
			}
			return nil
		}
		if _, err := nc.Write([]byte("version\r\n")); err != nil {
			return fmt.Errorf("version: %w", err)
		}
		line, err := bufio.NewReader(nc).ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		if !bytes.HasPrefix(line, []byte("VERSION ")) {
			return fmt.Errorf("version: unexpected reply %q", bytes.TrimSpace(line))
		}
		return nil
	}}
}

// dialCheck only checks that a listener accepts.
func dialCheck(name string, addrs func() []net.Addr) serviceCheck {
	return serviceCheck{name, func(ctx context.Context) error {
		as := addrs()
		if len(as) == 0 {
			return errors.New("not listening")
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, as[0].Network(), as[0].String())
		if err != nil {
			return fmt.Errorf("not accepting: %w", err)
		}
		return c.Close()
	}}
}

// watchdog sends WATCHDOG=1 at half the unit's WatchdogSec (systemd's
// WATCHDOG_USEC, for this PID) while every service answers
// (Unresponsive), until ctx ends: a hung service then gets the unit
// restarted, as systemd's watchdog intends. A degraded one (an alarm, no
// etcd quorum) is not restarted: /healthz reports it. Without WatchdogSec
// it does nothing. A failing check is logged when the state changes, not
// at every tick.
func watchdog(ctx context.Context, log *slog.Logger, h *health) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog: bad WATCHDOG_USEC or WATCHDOG_PID", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	period := interval / 2
	log.Info("systemd watchdog on", "interval", interval, "ping every", period)
	t := time.NewTicker(period)
	defer t.Stop()
	healthy := true
	for {
		cctx, cancel := context.WithTimeout(ctx, min(period, healthTimeout))
		failed := h.Unresponsive(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case len(failed) == 0:
			if !healthy {
				log.Info("systemd watchdog: healthy again, pinging")
			}
			healthy = true
			if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
				log.Warn("systemd watchdog notification failed", "err", err)
			}
		case healthy:
			healthy = false
			log.Error("systemd watchdog: not pinging while a service does not answer", "failed", strings.Join(failed, "; "))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
