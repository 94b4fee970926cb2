package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"substrate/broker/amqp"
	"substrate/broker/store"
)

// TestDiskAlarmBlocksPublishers: below DiskFreeLimit publishers get
// connection.blocked "low on disk" (RabbitMQ 3.10's text) and are not
// read; once space returns they get connection.unblocked and their
// publish goes through. The free-space probe is the test's.
func TestDiskAlarmBlocksPublishers(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 30)
	s := startServer(t, func(c *Config) {
		c.StoreDir = filepath.Join(t.TempDir(), "broker")
		c.DiskFreeLimit = 50_000_000
		c.diskFree = func(string) (uint64, error) { return free.Load(), nil }
		c.diskInterval = 10 * time.Millisecond
	})
	conn := dial(t, urlOf(s))
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ch := channel091(t, conn)
	declareDurable(t, ch, "dq", nil)
	other := channel091(t, dial(t, urlOf(s)))
	ready := func() int {
		q, err := other.QueueDeclarePassive("dq", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}

	free.Store(10_000_000)
	eventually(t, 2*time.Second, s.DiskAlarm, "disk alarm on")
	if s.DiskFree() != 10_000_000 || s.MemoryAlarm() {
		t.Fatalf("free %d, memory alarm %v", s.DiskFree(), s.MemoryAlarm())
	}
	if err := ch.Publish("", "dq", false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte("held")}); err != nil {
		t.Fatal(err)
	}
	b := recvTimeout(t, blocked, 2*time.Second)
	if !b.Active || b.Reason != "low on disk" {
		t.Fatalf("got %+v, want blocked \"low on disk\"", b)
	}
	time.Sleep(200 * time.Millisecond) // a negative check: nothing may arrive
	if n := ready(); n != 0 {
		t.Fatalf("%d messages while blocked", n)
	}
	if s.BlockedConnections() != 1 {
		t.Fatalf("BlockedConnections = %d", s.BlockedConnections())
	}

	free.Store(100_000_000)
	if b := recvTimeout(t, blocked, 2*time.Second); b.Active {
		t.Fatalf("got %+v, want unblocked", b)
	}
	eventually(t, 2*time.Second, func() bool { return ready() == 1 }, "publish after the disk alarm cleared")
}

// TestAlarmReasons: the reason names the resources on when the connection
// blocks, as RabbitMQ joins them ("low on disk & memory"); a second
// resource going on while blocked sends nothing more, and the connection
// is unblocked only when both are off.
func TestAlarmReasons(t *testing.T) {
	var free, used atomic.Uint64
	free.Store(1 << 30)
	s := startServer(t, func(c *Config) {
		c.StoreDir = filepath.Join(t.TempDir(), "broker")
		c.DiskFreeLimit = 1000
		c.diskFree = func(string) (uint64, error) { return free.Load(), nil }
		c.diskInterval = 10 * time.Millisecond
		c.MemoryHighWatermark = 1000
		c.memUsage = used.Load
	})
	if got := blockedReason(resMemory); got != "low on memory" {
		t.Fatal(got)
	}
	r := rawDial(t, addrOf(s))
	r.handshake(rawOpts{caps: amqp.Table{"connection.blocked": true}})
	r.send(1, &amqp.ChannelOpen{})
	expect[*amqp.ChannelOpenOk](r, 1)

	free.Store(10)
	used.Store(2000)
	eventually(t, 2*time.Second, func() bool { return s.DiskAlarm() && s.MemoryAlarm() }, "both alarms")
	r.publish(1, &amqp.BasicPublish{RoutingKey: "nowhere"}, &amqp.Properties{}, []byte("x"), 4096)
	if b := expect[*amqp.ConnectionBlocked](r, 0); b.Reason != "low on disk & memory" {
		t.Fatalf("reason %q", b.Reason)
	}
	free.Store(1 << 30)
	eventually(t, 2*time.Second, func() bool { return !s.DiskAlarm() }, "disk alarm off")
	r.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if f, err := r.fr.ReadFrame(); err == nil {
		t.Fatalf("got a frame (type %d) while memory is still low", f.Type)
	}
	r.fr = amqp.NewFrameReader(r.nc)
	used.Store(10)
	expect[*amqp.ConnectionUnblocked](r, 0)
}

// failingStore starts a broker whose message store runs on a MemFS with
// writes failing while *full is set.
func failingStore(t *testing.T) (*Server, *atomic.Bool) {
	fsys := store.NewMemFS()
	var full atomic.Bool
	fsys.SetFault(func(op, path string) error {
		if full.Load() && (op == "write" || op == "sync") {
			return syscall.ENOSPC
		}
		return nil
	})
	s := startServer(t, func(c *Config) {
		c.StoreDir = "/mem/broker"
		c.storeTweak = func(sc *store.Config) { sc.FS = fsys }
	})
	return s, &full
}

// TestStoreNoSpaceNacksThenRecovers: with the store's writes failing
// ENOSPC, persistent publishes are nacked; the failure is not sticky:
// once space returns, publishes are acked again, on the same channel.
func TestStoreNoSpaceNacksThenRecovers(t *testing.T) {
	s, full := failingStore(t)
	c := dial(t, urlOf(s))
	ch := channel091(t, c)
	declareDurable(t, ch, "pq", nil)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 16))
	pub := func(body string) amqp091.Confirmation {
		t.Helper()
		if err := ch.Publish("", "pq", false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		return recvTimeout(t, confirms, 5*time.Second)
	}
	if !pub("before").Ack {
		t.Fatal("nacked with a working disk")
	}
	full.Store(true)
	if pub("full-1").Ack || pub("full-2").Ack {
		t.Fatal("acked while the store cannot write")
	}
	full.Store(false)
	// The first cycle after space returns repairs and writes: acked.
	if c := pub("after"); !c.Ack {
		t.Fatalf("nacked after space returned: %+v (the failure must not be sticky)", c)
	}
	if st := s.StoreStats(); st.Live < 2 {
		t.Fatalf("store stats %+v", st)
	}
}

// TestTxCommitNeedsStorage: a transaction whose persistent messages the
// store cannot write gets no tx.commit-ok but RabbitMQ's channel error for
// a transaction it could not complete (406 "partial tx completion"), and
// none of its messages, the transient one included, is delivered. Once
// space returns, a transaction on a new channel commits.
func TestTxCommitNeedsStorage(t *testing.T) {
	s, full := failingStore(t)
	c := dial(t, urlOf(s))
	setup := channel091(t, c)
	declareDurable(t, setup, "txq", nil)
	if _, err := setup.QueueDeclare("txq-transient", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	consumer := channel091(t, dial(t, urlOf(s)))
	deliveries, err := consumer.Consume("txq", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	transient, err := consumer.Consume("txq-transient", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	ch := channel091(t, c)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	for _, p := range []struct {
		q    string
		mode uint8
	}{{"txq", 2}, {"txq-transient", 1}, {"txq", 2}} {
		if err := ch.Publish("", p.q, false, false, amqp091.Publishing{DeliveryMode: p.mode, Body: []byte("tx")}); err != nil {
			t.Fatal(err)
		}
	}
	err = ch.TxCommit()
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != 406 || ae.Reason != "PRECONDITION_FAILED - partial tx completion" {
		t.Fatalf("tx.commit on a full disk = %v, want 406 partial tx completion", err)
	}
	noRecv(t, deliveries, 300*time.Millisecond)
	noRecv(t, transient, 10*time.Millisecond)
	if st := s.StoreStats(); st.Live != 0 {
		t.Fatalf("%d messages of a failed transaction left in the store", st.Live)
	}

	full.Store(false)
	ch = channel091(t, c)
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "txq", false, false, amqp091.Publishing{DeliveryMode: 2, Body: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ch.TxCommit() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tx.commit after space returned: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("tx.commit hangs")
	}
	if d := recvTimeout(t, deliveries, 2*time.Second); string(d.Body) != "ok" {
		t.Fatalf("delivered %q", d.Body)
	}
}

// TestDiskAlarmPurgeResumes plays the small-disk case with a probe that
// reports a 24 MB disk minus what the store's files take: persistent
// publishes fill it until the disk alarm blocks the publisher; a purge
// removes the store's segments (the tail too), the alarm clears, and
// publishing resumes.
func TestDiskAlarmPurgeResumes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	const disk = 24 << 20
	var release atomic.Bool // cleanup: plenty of space, so a blocked client can close
	s := startServer(t, func(c *Config) {
		c.StoreDir = dir
		c.DiskFreeLimit = 12 << 20
		c.diskFree = func(d string) (uint64, error) {
			if release.Load() {
				return 1 << 40, nil
			}
			used, err := dirSize(d)
			return uint64(max(disk-used, 0)), err
		}
		c.diskInterval = 20 * time.Millisecond
	})
	conn := dial(t, urlOf(s))
	t.Cleanup(func() { // before the client's Close (cleanups run last first)
		release.Store(true)
		deadline := time.Now().Add(5 * time.Second)
		for s.BlockedConnections() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	})
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	ch := channel091(t, conn)
	declareDurable(t, ch, "fill", nil)
	body := make([]byte, 256<<10)
	published := make(chan int, 1)
	go func() {
		n := 0
		defer func() { published <- n }()
		for range 200 { // 50 MB: more than the disk
			if ch.Publish("", "fill", false, false, amqp091.Publishing{DeliveryMode: 2, Body: body}) != nil {
				return
			}
			n++
		}
	}()
	if b := recvTimeout(t, blocked, 10*time.Second); !b.Active || b.Reason != "low on disk" {
		t.Fatalf("got %+v", b)
	}
	other := channel091(t, dial(t, urlOf(s)))
	n, err := other.QueuePurge("fill", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("blocked after %d messages (%.1f MB free)", n, float64(s.DiskFree())/1e6)
	if b := recvTimeout(t, blocked, 10*time.Second); b.Active {
		t.Fatalf("got %+v, want unblocked after the purge", b)
	}
	// Publishing resumes; each time the disk is low again a purge lets it
	// go on, until all 200 went.
	blocks := 1
	for {
		select {
		case b := <-blocked:
			if b.Active {
				blocks++
				if _, err := other.QueuePurge("fill", false); err != nil {
					t.Fatal(err)
				}
			}
		case got := <-published:
			if got != 200 {
				t.Fatalf("%d of 200 published", got)
			}
			t.Logf("200 messages of 256 KiB through a 24 MB disk, blocked %d times", blocks)
			if blocks < 2 {
				t.Fatal("publishing was not blocked again after the purge")
			}
			// A blocked connection is not read, its connection.close
			// included: clear the alarm before the client closes.
			eventually(t, 10*time.Second, func() bool {
				other.QueuePurge("fill", false)
				return !s.DiskAlarm() && s.BlockedConnections() == 0
			}, "the alarm cleared")
			return
		case <-time.After(10 * time.Second):
			t.Fatal("publishing did not resume")
		}
	}
}

// dirSize is the bytes of the files in dir.
func dirSize(dir string) (int64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, de := range des {
		if fi, err := de.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n, nil
}
