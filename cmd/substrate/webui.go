package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"substrate/broker"
	"substrate/cache"
	"substrate/internal/webui"
	"substrate/kvstore"
)

// newWebUI builds the dashboard at / from the services this process runs
// (nil: not running).
func newWebUI(started time.Time, services []string, kv *kvstore.Store, b *broker.Server, c *cache.Server) *webui.Handler {
	cfg := webui.Config{Version: versionString(), Services: services}
	if kv != nil {
		cfg.Etcd = kv.Status
	}
	if c != nil {
		cfg.Cache = c.Stats
	}
	if b != nil {
		cfg.Broker = b
		cfg.Alarms = func() []webui.Alarm { return brokerAlarms(b) }
		cfg.Authenticate = func(r *http.Request) (string, error) { return uiLogin(b, r) }
	}
	return webui.New(cfg, started)
}

// brokerAlarms are the broker's resource alarms in effect, as
// rabbitmq-diagnostics alarms names them.
func brokerAlarms(b *broker.Server) []webui.Alarm {
	var out []webui.Alarm
	if b.MemoryAlarm() {
		out = append(out, webui.Alarm{Service: "amqp", Resource: "memory",
			Detail: fmt.Sprintf("%s used, high watermark %s: publishers are blocked", humanBytes(b.MemoryUsed()), humanBytes(b.MemoryHighWatermark()))})
	}
	if b.DiskAlarm() {
		out = append(out, webui.Alarm{Service: "amqp", Resource: "disk",
			Detail: fmt.Sprintf("%s free, limit %s: publishers are blocked", humanBytes(b.DiskFree()), humanBytes(b.DiskFreeLimit()))})
	}
	return out
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"B", "KiB", "MiB", "GiB", "TiB"}[i])
}

// uiTags are the user tags that may use the management UI, as in
// RabbitMQ (management, and the tags that include it).
var uiTags = []string{"management", "policymaker", "monitoring", "administrator"}

// uiLogin checks the request's basic auth against the broker's users as
// RabbitMQ's management plugin does: the password, the default user's
// loopback-only rule, and a tag that grants the UI. The errors are
// RabbitMQ's reasons.
func uiLogin(b *broker.Server, r *http.Request) (string, error) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		return "", errors.New("Not logged in")
	}
	users := b.Users()
	i := slices.IndexFunc(users, func(u broker.User) bool { return u.Name == name })
	if i < 0 {
		return "", errors.New("Login failed")
	}
	u := users[i]
	if !u.CheckPassword(pass) {
		return "", errors.New("Login failed")
	}
	if name == broker.DefaultUser && !remoteIsLoopback(r.RemoteAddr) {
		return "", errors.New("User can only log in via localhost")
	}
	if !slices.ContainsFunc(u.Tags, func(t string) bool { return slices.Contains(uiTags, t) }) {
		return "", errors.New("Not management user")
	}
	return name, nil
}

func remoteIsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
