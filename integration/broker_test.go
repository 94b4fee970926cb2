package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func dialAMQP(s *server, user, pass string) (*amqp.Connection, error) {
	return amqp.DialConfig(fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", user, pass, s.amqpPort), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
}

// TestBrokerUsersLiveInEtcd: users and permissions made with ctl (as
// rabbitmqctl) are enforced at login and survive a restart, because they
// live in the embedded etcd.
func TestBrokerUsersLiveInEtcd(t *testing.T) {
	s := serve(t)
	out := run(t, 30*time.Second, nil, binary, "ctl", "--data-dir", s.dataDir, "add_user", "openstack", "RABBIT_PASS")
	if !strings.HasPrefix(out, `Adding user "openstack" ...`) {
		t.Fatalf("add_user: %q", out)
	}
	// rabbitmqctl as a symlink to substrate, as the manual install runs it.
	link := filepath.Join(t.TempDir(), "rabbitmqctl")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	out = run(t, 30*time.Second, []string{"SUBSTRATE_DATA_DIR=" + s.dataDir}, link, "set_permissions", "openstack", ".*", ".*", ".*")
	if !strings.HasPrefix(out, `Setting permissions for user "openstack" in vhost "/" ...`) {
		t.Fatalf("rabbitmqctl set_permissions: %q", out)
	}

	c, err := dialAMQP(s, "openstack", "RABBIT_PASS")
	if err != nil {
		t.Fatalf("login as openstack: %v", err)
	}
	c.Close()
	_, err = dialAMQP(s, "openstack", "wrong")
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Fatalf("wrong password: %v, want 403 ACCESS_REFUSED", err)
	}

	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s.restart(t)
	c, err = dialAMQP(s, "openstack", "RABBIT_PASS")
	if err != nil {
		t.Fatalf("login after restart: %v", err)
	}
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("after-restart", false, true, false, false, nil); err != nil {
		t.Fatalf("permissions after restart: %v", err)
	}
	c.Close()
}

// TestDurableEntitiesSurviveRestart: durable exchanges, queues and
// bindings come back after a restart (their definitions are in etcd);
// transient ones do not.
func TestDurableEntitiesSurviveRestart(t *testing.T) {
	s := serve(t)
	c, err := dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("nova", "topic", true, false, false, false, nil))
	_, err = ch.QueueDeclare("notifications.info", true, false, false, false, amqp.Table{"x-queue-mode": "lazy"})
	must(err)
	must(ch.QueueBind("notifications.info", "notifications.info", "nova", false, nil))
	_, err = ch.QueueDeclare("reply_transient", false, false, false, false, nil)
	must(err)
	c.Close()

	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s.restart(t)

	c, err = dialAMQP(s, "guest", "guest")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err = c.Channel()
	must(err)
	must(ch.ExchangeDeclarePassive("nova", "topic", true, false, false, false, nil))
	q, err := ch.QueueDeclarePassive("notifications.info", true, false, false, false, amqp.Table{"x-queue-mode": "lazy"})
	must(err)
	if q.Name != "notifications.info" {
		t.Fatalf("queue %+v", q)
	}
	// The binding came back too: a publish through it is routed.
	must(ch.Publish("nova", "notifications.info", true, false, amqp.Publishing{Body: []byte("hello")}))
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ok, err := ch.Get("notifications.info", true)
		must(err)
		if ok {
			if string(m.Body) != "hello" {
				t.Fatalf("body %q", m.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("binding lost: message not routed after restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err = ch.QueueDeclarePassive("reply_transient", false, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		t.Fatalf("transient queue after restart: %v, want 404", err)
	}
}
