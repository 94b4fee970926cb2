package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"substrate/broker"
	"substrate/cache"
	"substrate/internal/webui"
	"substrate/kvstore"
)

// newWebUI builds the dashboard at / from the services this process runs
// (nil: not running; b nil: no broker, or b returns the broker running
// now, nil on a cluster node that does not lead) and the checks of
// /healthz; clu is the broker's cluster node (nil: not clustered).
func newWebUI(started time.Time, services []string, checks *health, kv *kvstore.Store, b func() *broker.Server, c *cache.Server, clu *clusterService) *webui.Handler {
	cfg := webui.Config{Version: versionString(), Services: services, Health: checks.perService}
	if clu != nil {
		cfg.Cluster = func() []webui.ClusterNode {
			var out []webui.ClusterNode
			for _, st := range clu.ClusterStatus() {
				out = append(out, webui.ClusterNode{Name: "rabbit@" + st.Name, Self: st.ID == clu.Self().ID, Reachable: st.Reachable,
					Leader: st.IsLeader, Active: st.Active, Term: st.Term, Commit: st.Commit, Applied: st.Applied, Forwarded: st.Forwarded, Err: st.Err, Learner: st.Learner})
			}
			return out
		}
	}
	if kv != nil {
		cfg.Etcd = kv.Status
	}
	if c != nil {
		cfg.Cache = c.Stats
	}
	if b != nil {
		cfg.Alarms = func() []webui.Alarm {
			if b := b(); b != nil {
				return brokerAlarms(b)
			}
			return nil
		}
		cfg.Authenticate = func(r *http.Request) (string, error) {
			if b := b(); b != nil {
				return uiLogin(b, r)
			}
			if clu != nil {
				return clu.leaderLogin(r)
			}
			return "", errors.New("Login failed")
		}
	}
	return webui.New(cfg, started)
}

// perService runs the checks of /healthz and says for each checked
// service whether it passed, with the failure's reason.
func (h *health) perService(ctx context.Context) []webui.Check {
	failed := map[string]string{}
	for _, l := range h.Failures(ctx) {
		name, reason, _ := strings.Cut(l, ": ")
		failed[name] = reason
	}
	out := make([]webui.Check, 0, len(h.checks))
	for _, c := range h.checks {
		reason, bad := failed[c.name]
		if !bad {
			reason = checkedWhat[c.name]
		}
		out = append(out, webui.Check{Service: c.name, OK: !bad, Detail: reason})
	}
	return out
}

// checkedWhat says what a passing check of health.go found.
var checkedWhat = map[string]string{
	"etcd":      "linearizable read answered",
	"amqp":      "accepting connections, no alarm",
	"memcached": "accepting connections",
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
func uiLogin(b *broker.Server, r *http.Request) (string, error) { return uiLoginWith(b.CheckLogin, r) }

// uiLoginWith is uiLogin with the password and loopback check given.
func uiLoginWith(check func(name, password string, peer net.Addr) (broker.User, error), r *http.Request) (string, error) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		return "", errors.New("Not logged in")
	}
	var peer net.Addr
	if a, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		peer = a
	}
	u, err := check(name, pass, peer)
	switch {
	case errors.Is(err, broker.ErrLoopbackOnly):
		return "", errors.New("User can only log in via localhost")
	case err != nil:
		return "", errors.New("Login failed")
	}
	if !slices.ContainsFunc(u.Tags, func(t string) bool { return slices.Contains(uiTags, t) }) {
		return "", errors.New("Not management user")
	}
	return name, nil
}
