package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sys/unix"
)

// Disk (issue 9): the message store's directory on a small tmpfs the test
// mounts (root only; without the permission the test skips, or fails
// under SUBSTRATE_REQUIRE_CLIENTS=1). Only DATA/broker is on it: etcd
// preallocates 64 MiB WAL segments, and etcd's own space quota is not
// what these tests are about.

// mountTmpfs mounts a tmpfs of size (mount's size= form) on dir and
// unmounts it at cleanup, after everything registered later (the server)
// has stopped.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		need(t, "permission to mount a tmpfs (run as root)", false)
	}
	if err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// diskServer starts serve with the store on a tmpfs of size and extra
// flags; start again with (*diskServer).restart.
type diskServer struct {
	*server
	extra []string
}

func serveOnTmpfs(t *testing.T, size string, extra ...string) *diskServer {
	t.Helper()
	s := newServer(t)
	mountTmpfs(t, filepath.Join(s.dataDir, "broker"), size)
	s.proc = start(t, nil, s.args(extra...)...)
	s.waitReady(30 * time.Second)
	return &diskServer{server: s, extra: extra}
}

// restart stops the server with SIGTERM (exit 0 required) and starts it
// again with the same flags.
func (s *diskServer) restart(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, s.output())
	}
	s.proc = start(t, nil, s.args(s.extra...)...)
	s.waitReady(30 * time.Second)
}

// persistentPublisher publishes persistent messages in confirm mode on its
// own connection, keeping up to window unconfirmed, and records each
// message's outcome.
type persistentPublisher struct {
	t       *testing.T
	conn    *amqp.Connection
	ch      *amqp.Channel
	blocked chan amqp.Blocking
	closed  chan *amqp.Error
}

func newPersistentPublisher(t *testing.T, s *server) *persistentPublisher {
	t.Helper()
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &persistentPublisher{t: t, conn: conn,
		blocked: conn.NotifyBlocked(make(chan amqp.Blocking, 16)),
		closed:  conn.NotifyClose(make(chan *amqp.Error, 1))}
	if p.ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	if err := p.ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return p
}

// outcome of one message: "ack", "nack", or "" while unconfirmed.
type outcome struct {
	body string
	dc   *amqp.DeferredConfirmation
}

func (o *outcome) result() string {
	select {
	case <-o.dc.Done():
		if o.dc.Acked() {
			return "ack"
		}
		return "nack"
	default:
		return ""
	}
}

// send publishes one persistent message without waiting.
func (p *persistentPublisher) send(queue, body string, size int) *outcome {
	p.t.Helper()
	b := make([]byte, max(size, len(body)))
	copy(b, body)
	dc, err := p.ch.PublishWithDeferredConfirm("", queue, false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: body, Body: b})
	if err != nil {
		p.t.Fatalf("publish %s: %v", body, err)
	}
	return &outcome{body: body, dc: dc}
}

// publishAll publishes n messages prefix-1..prefix-n to queue and waits
// for every confirm; it returns the outcomes.
func (p *persistentPublisher) publishAll(queue, prefix string, n, size int, wait time.Duration) []*outcome {
	p.t.Helper()
	var outs []*outcome
	for i := 1; i <= n; i++ {
		outs = append(outs, p.send(queue, fmt.Sprintf("%s-%d", prefix, i), size))
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, o := range outs {
		if _, err := o.dc.WaitContext(ctx); err != nil {
			p.t.Fatalf("%s: no confirm within %v", o.body, wait)
		}
	}
	return outs
}

func bodies(outs []*outcome, want string) []string {
	var b []string
	for _, o := range outs {
		if o.result() == want {
			b = append(b, o.body)
		}
	}
	return b
}

// getAck takes n messages from queue with basic.get and acknowledges each;
// it returns their message ids.
func getAck(t *testing.T, ch *amqp.Channel, queue string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		m, ok, err := ch.Get(queue, false)
		if err != nil || !ok {
			t.Fatalf("basic.get %s after %d: ok=%v %v", queue, len(ids), ok, err)
		}
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.MessageId)
	}
	return ids
}

// drain takes every message of queue (auto-ack) and counts them by id.
func drain(t *testing.T, s *server, queue string) map[string]int {
	t.Helper()
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for {
		m, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("draining %s: %v", queue, err)
		}
		if !ok {
			return got
		}
		got[m.MessageId]++
	}
}

// checkBack compares a drained queue with what must and must not be in it.
func checkBack(t *testing.T, got map[string]int, must, mustNot []string) {
	t.Helper()
	var missing, back, dup []string
	for _, id := range must {
		if got[id] == 0 {
			missing = append(missing, id)
		} else if got[id] > 1 {
			dup = append(dup, id)
		}
	}
	for _, id := range mustNot {
		if got[id] > 0 {
			back = append(back, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d confirmed, unacknowledged messages lost: %v", len(missing), firstN(missing, 10))
	}
	if len(back) > 0 {
		t.Errorf("%d acknowledged (or purged) messages came back: %v", len(back), firstN(back, 10))
	}
	if len(dup) > 0 {
		t.Errorf("%d messages delivered twice: %v", len(dup), firstN(dup, 10))
	}
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clone(s[:n]), fmt.Sprintf("... (%d more)", len(s)-n))
	}
	return s
}

func declareDurable(t *testing.T, s *server, queues ...string) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return conn, ch
}

// TestDiskAlarmBlocksAndRecovers: with --amqp-disk-free-limit 64MB on a
// 192 MiB tmpfs, persistent 256 KB messages to a durable queue until the
// disk alarm blocks the publisher (connection.blocked "low on disk",
// substrate_amqp_disk_alarm 1); meanwhile a consumer acknowledges (it is
// never blocked). The filling queue is purged: the store removes its
// sealed segments, the alarm clears (connection.unblocked) and the same
// publisher goes on. After a restart no acknowledged or purged message is
// back and every confirmed, unacknowledged one is.
//
// RabbitMQ 3.10 does the same with disk_free_limit (default 50MB): it
// checks the free space periodically, blocks publishing connections
// with connection.blocked, and unblocks them when space returns.
func TestDiskAlarmBlocksAndRecovers(t *testing.T) {
	s := serveOnTmpfs(t, "192m", "--amqp-disk-free-limit", "64MB")
	_, ch := declareDurable(t, s.server, "rel.disk.keep", "rel.disk.fill")
	keeper := newPersistentPublisher(t, s.server)
	k1 := keeper.publishAll("rel.disk.keep", "keep1", 100, 4096, 30*time.Second)
	if n := len(bodies(k1, "ack")); n != 100 {
		t.Fatalf("%d of 100 confirmed before the disk filled", n)
	}
	acked := getAck(t, ch, "rel.disk.keep", 30) // keep1-1..30

	// Fill until blocked, at 32 MB/s (a 256 KB message every 8 ms). The
	// alarm is a check every second, as RabbitMQ's (which checks at most
	// every second, less often when far from the limit); a publisher that
	// writes the headroom (here 128 MB) within one interval reaches ENOSPC
	// before the alarm: unpaced, this one wrote 192 MB in 2 s and its last
	// messages were nacked. TestFullDiskNacksAndRecovers covers that case.
	filler := newPersistentPublisher(t, s.server)
	var fill []*outcome
	var block amqp.Blocking
	t0 := time.Now()
	pace := time.NewTicker(8 * time.Millisecond)
	defer pace.Stop()
	for block.Reason == "" {
		select {
		case block = <-filler.blocked:
		case <-pace.C:
			if len(fill) >= 1000 {
				t.Fatalf("no connection.blocked after %d messages of 256 KB (free %v)", len(fill), diskFree(t, s.server))
			}
			// At most 8 unconfirmed (2 MB): once blocked, the server stops
			// reading, and a send must not block on a full socket.
			if len(fill) < 8 || fill[len(fill)-8].result() != "" {
				fill = append(fill, filler.send("rel.disk.fill", fmt.Sprintf("fill-%d", len(fill)+1), 256<<10))
			}
		}
	}
	t.Logf("connection.blocked %q after %d messages (%d MB) in %v; free %v",
		block.Reason, len(fill), len(fill)/4, time.Since(t0).Round(time.Millisecond), diskFree(t, s.server))
	if !block.Active || block.Reason != "low on disk" {
		t.Errorf("blocked with %+v, want active, reason \"low on disk\"", block)
	}
	if v, _ := metricOK(t, s.server, "substrate_amqp_disk_alarm"); v != 1 {
		t.Errorf("substrate_amqp_disk_alarm %v while blocked", v)
	}
	// Consumers are not blocked: acknowledge more while the alarm is on.
	acked = append(acked, getAck(t, ch, "rel.disk.keep", 20)...) // keep1-31..50

	// Let the confirms of what the server read settle, then purge.
	settled := func() int { return len(bodies(fill, "ack")) + len(bodies(fill, "nack")) }
	prev := -1
	poll(10*time.Second, 500*time.Millisecond, func() bool { n := settled(); d := n == prev; prev = n; return d })
	purgedConfirmed := bodies(fill, "ack")
	if nacked := bodies(fill, "nack"); len(nacked) > 0 {
		t.Errorf("%d fill messages nacked before the purge (the alarm should block, not fail): %v", len(nacked), firstN(nacked, 5))
	}
	n, err := ch.QueuePurge("rel.disk.fill", false)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	select {
	case b := <-filler.blocked:
		if b.Active {
			t.Fatalf("blocked again: %+v", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no connection.unblocked 30 s after purging %d messages (free %v)", n, diskFree(t, s.server))
	}
	t.Logf("purged %d messages; connection.unblocked %v later; free %v", n, time.Since(t1).Round(time.Millisecond), diskFree(t, s.server))
	// The blocked publisher goes on: what it had sent is confirmed, and
	// more.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, o := range fill {
		if _, err := o.dc.WaitContext(ctx); err != nil {
			t.Fatalf("%s: no confirm 30 s after the alarm cleared", o.body)
		}
	}
	more := filler.publishAll("rel.disk.fill", "after", 20, 256<<10, 30*time.Second)
	if a := len(bodies(more, "ack")); a != 20 {
		t.Errorf("after the alarm cleared: %d of 20 confirmed", a)
	}
	k2 := keeper.publishAll("rel.disk.keep", "keep2", 100, 4096, 30*time.Second)

	s.restart(t)
	got := drain(t, s.server, "rel.disk.keep")
	must := append(bodies(k1, "ack"), bodies(k2, "ack")...)
	must = slices.DeleteFunc(must, func(id string) bool { return slices.Contains(acked, id) })
	checkBack(t, got, must, acked)
	fillGot := drain(t, s.server, "rel.disk.fill")
	checkBack(t, fillGot, bodies(more, "ack"), purgedConfirmed)
	t.Logf("after the restart: %d messages back in the kept queue (%d confirmed and unacknowledged, %d acknowledged not back); %d in the filled queue",
		len(got), len(must), len(acked), len(fillGot))
}

// diskFree is substrate_amqp_disk_free_bytes, formatted.
func diskFree(t *testing.T, s *server) string {
	v, ok := metricOK(t, s, "substrate_amqp_disk_free_bytes")
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%.1f MB", v/1e6)
}

// TestFullDiskNacksAndRecovers: the alarm off (--amqp-disk-free-limit 0)
// and the store's tmpfs filled by another file, so that the store's
// writes fail with ENOSPC. Persistent publishes are nacked, not confirmed;
// a transaction's tx.commit does not answer commit-ok (the client gets a
// channel error) and none of its messages is delivered; acknowledgements
// made meanwhile hold. Once the file is deleted the store goes on (not
// sticky): publishes are confirmed again. After a restart every confirmed,
// unacknowledged message is back and no acknowledged one.
//
// RabbitMQ does not reach this state in normal operation (its disk alarm
// is always on, 50MB by default); when its message store cannot write,
// the queue or store process crashes and is restarted by its supervisor,
// and publishers in confirm mode get basic.nack for what was lost.
func TestFullDiskNacksAndRecovers(t *testing.T) {
	s := serveOnTmpfs(t, "48m", "--amqp-disk-free-limit", "0")
	_, ch := declareDurable(t, s.server, "rel.enospc")
	pub := newPersistentPublisher(t, s.server)
	k1 := pub.publishAll("rel.enospc", "k1", 100, 4096, 30*time.Second)
	if n := len(bodies(k1, "ack")); n != 100 {
		t.Fatalf("%d of 100 confirmed with free space", n)
	}
	acked := getAck(t, ch, "rel.enospc", 10) // k1-1..10

	filler := filepath.Join(s.dataDir, "broker", "filler")
	fillDisk(t, filler)
	t.Logf("tmpfs full: free %v", diskFree(t, s.server))

	// Persistent publishes while the disk is full: nacked, each within
	// the store's retry bound, never confirmed.
	t0 := time.Now()
	full := pub.publishAll("rel.enospc", "full", 10, 64<<10, 30*time.Second)
	if a := bodies(full, "ack"); len(a) > 0 {
		t.Errorf("%d persistent messages confirmed on a full disk: %v", len(a), a)
	}
	t.Logf("%d of %d publishes nacked on the full disk in %v", len(bodies(full, "nack")), len(full), time.Since(t0).Round(time.Millisecond))

	// A transaction: commit-ok must not come.
	txConn, err := dialAMQP(s.server, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer txConn.Close()
	tx, err := txConn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Tx(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		body := fmt.Sprintf("tx-%d", i)
		if err := tx.Publish("", "rel.enospc", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: body, Body: make([]byte, 64<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	txErr := make(chan error, 1)
	go func() { txErr <- tx.TxCommit() }()
	select {
	case err := <-txErr:
		if err == nil {
			t.Errorf("tx.commit-ok for a transaction whose messages could not be stored")
		} else {
			t.Logf("tx.commit on the full disk: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("tx.commit neither answered nor failed within 30 s")
	}

	// Acknowledgements while the disk is full.
	acked = append(acked, getAck(t, ch, "rel.enospc", 10)...) // k1-11..20

	// Space returns: not sticky.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	var first *outcome
	if !poll(30*time.Second, 0, func() bool {
		first = pub.publishAll("rel.enospc", "probe", 1, 64<<10, 10*time.Second)[0]
		return first.result() == "ack"
	}) {
		t.Fatalf("still nacking 30 s after space returned (free %v)", diskFree(t, s.server))
	}
	t.Logf("confirmed again %v after the filler was deleted", time.Since(t1).Round(time.Millisecond))
	k2 := pub.publishAll("rel.enospc", "k2", 50, 4096, 30*time.Second)
	if n := len(bodies(k2, "ack")); n != 50 {
		t.Errorf("after space returned: %d of 50 confirmed (not sticky?)", n)
	}
	// None of the transaction's messages is delivered.
	got := drainKeep(t, ch, "rel.enospc")
	var txBack []string
	for id := range got {
		if strings.HasPrefix(id, "tx-") {
			txBack = append(txBack, id)
		}
	}
	if len(txBack) > 0 {
		t.Errorf("messages of the failed transaction were delivered: %v", txBack)
	}

	s.restart(t)
	got = drain(t, s.server, "rel.enospc")
	must := append(bodies(k1, "ack"), bodies(k2, "ack")...)
	must = slices.DeleteFunc(must, func(id string) bool { return slices.Contains(acked, id) })
	mustNot := append(slices.Clone(acked), "tx-1", "tx-2", "tx-3", "tx-4", "tx-5")
	checkBack(t, got, must, mustNot)
	nackedBack := 0
	for _, id := range bodies(full, "nack") {
		nackedBack += got[id]
	}
	t.Logf("after the restart: %d messages back (%d confirmed and unacknowledged required, %d acknowledged not back); %d of %d nacked ones present",
		len(got), len(must), len(acked), nackedBack, len(bodies(full, "nack")))
}

// drainKeep looks at every message of queue with basic.get and requeues
// them (nack with requeue), returning their ids.
func drainKeep(t *testing.T, ch *amqp.Channel, queue string) map[string]int {
	t.Helper()
	got := map[string]int{}
	var last amqp.Delivery
	n := 0
	for {
		m, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got[m.MessageId]++
		last = m
		n++
	}
	if n > 0 {
		if err := last.Nack(true, true); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// fillDisk writes path until the filesystem is full (ENOSPC).
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				t.Fatal(err)
			}
		}
	}
}
