package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"substrate/cache"
	"substrate/kvstore"
)

// GET /substrate/status: what the page shows that is substrate's own.
// Field names follow the daemon each part replaces where it has one
// (memcached's stats names, etcdctl's endpoint status).

type statusReply struct {
	Version       string          `json:"version"`
	User          string          `json:"user,omitempty"`
	Time          int64           `json:"time"` // Unix milliseconds
	UptimeSeconds int64           `json:"uptime_seconds"`
	Services      []serviceStatus `json:"services"`
	Alarms        []Alarm         `json:"alarms"`
	Cache         *cacheStatus    `json:"cache"`   // null: memcached not running
	Etcd          *etcdStatus     `json:"etcd"`    // null: etcd not running
	Cluster       *clusterStatus  `json:"cluster"` // null: the broker is not clustered
}

type serviceStatus struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// State: "ok" (checked, healthy), "failed" (checked, unhealthy),
	// "running" (enabled, no health check available), "disabled".
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

type cacheStatus struct {
	CurrItems       uint64   `json:"curr_items"`
	TotalItems      uint64   `json:"total_items"`
	Bytes           int64    `json:"bytes"`
	LimitMaxBytes   int64    `json:"limit_maxbytes"`
	Evictions       uint64   `json:"evictions"`
	Reclaimed       uint64   `json:"reclaimed"`
	GetHits         uint64   `json:"get_hits"`
	GetMisses       uint64   `json:"get_misses"`
	GetExpired      uint64   `json:"get_expired"`
	HitRatio        *float64 `json:"hit_ratio"` // get_hits / (get_hits + get_misses); null before the first get
	CmdGet          uint64   `json:"cmd_get"`
	CmdSet          uint64   `json:"cmd_set"`
	CurrConnections int      `json:"curr_connections"`
	MaxConnections  int      `json:"max_connections"`
	TotalConns      uint64   `json:"total_connections"`
	BytesRead       uint64   `json:"bytes_read"`
	BytesWritten    uint64   `json:"bytes_written"`
	Uptime          uint64   `json:"uptime"`
}

type etcdStatus struct {
	Error          string       `json:"error,omitempty"` // the member's state could not be read
	MemberID       string       `json:"member_id,omitempty"`
	Leader         string       `json:"leader,omitempty"` // "" when there is none
	LeaderName     string       `json:"leader_name,omitempty"`
	RaftTerm       uint64       `json:"raft_term"`
	DBSize         int64        `json:"db_size"`
	DBSizeInUse    int64        `json:"db_size_in_use"`
	DBQuota        int64        `json:"db_quota"`
	IsLearner      bool         `json:"is_learner"`
	Version        string       `json:"version,omitempty"`
	ClusterVersion string       `json:"cluster_version,omitempty"`
	Members        []etcdMember `json:"members"`
}

type etcdMember struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	IsLearner  bool     `json:"is_learner"`
	IsLeader   bool     `json:"is_leader"`
	IsSelf     bool     `json:"is_self"`
}

// clusterStatus is the broker's Raft group; field names follow the
// cluster's own status (internal/cluster.NodeStatus).
type clusterStatus struct {
	Leader string        `json:"leader"` // "" when no node answered as leader
	Nodes  []clusterNode `json:"nodes"`
}

type clusterNode struct {
	Name string `json:"name"`
	Self bool   `json:"is_self"`
	// Role: "leader", "follower", "learner" (a member being added) or
	// "unreachable"; Broker: "active"
	// (serving clients), "standby", or "unknown" when unreachable.
	Role      string `json:"role"`
	Broker    string `json:"broker"`
	Reachable bool   `json:"reachable"`
	IsLeader  bool   `json:"is_leader"`
	Active    bool   `json:"active"`
	Term      uint64 `json:"term"`
	Commit    uint64 `json:"commit_index"`
	Applied   uint64 `json:"applied_index"`
	Forwarded int    `json:"forwarded_connections"`
	Error     string `json:"error,omitempty"`
}

// pageServices are the services the page always shows, enabled or not;
// others (redis, http) appear when they run.
var pageServices = []string{"etcd", "amqp", "memcached"}

// healthTimeout bounds the health checks of one request.
const healthTimeout = 3 * time.Second

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	var user string
	if h.cfg.Authenticate != nil {
		var err error
		if user, err = h.cfg.Authenticate(r); err != nil {
			// No WWW-Authenticate: the page's own form asks, not the
			// browser's prompt.
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not_authorised", "reason": err.Error()})
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	writeJSON(w, http.StatusOK, h.collect(ctx, user))
}

func (h *Handler) collect(ctx context.Context, user string) statusReply {
	now := h.cfg.Now()
	rep := statusReply{
		Version:       h.cfg.Version,
		User:          user,
		Time:          now.UnixMilli(),
		UptimeSeconds: int64(now.Sub(h.started) / time.Second),
		Alarms:        []Alarm{},
	}
	rep.Services = h.services(ctx)
	if h.cfg.Alarms != nil {
		rep.Alarms = append(rep.Alarms, h.cfg.Alarms()...)
	}
	if h.cfg.Cache != nil {
		rep.Cache = cacheReply(h.cfg.Cache)
	}
	if h.cfg.Etcd != nil {
		var alarms []Alarm
		rep.Etcd, alarms = etcdReply(h.cfg.Etcd)
		rep.Alarms = append(rep.Alarms, alarms...)
	}
	if h.cfg.Cluster != nil {
		rep.Cluster = clusterReply(h.cfg.Cluster())
	}
	return rep
}

func (h *Handler) services(ctx context.Context) []serviceStatus {
	names := slices.Clone(pageServices)
	for _, n := range h.cfg.Services {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	var checks map[string]Check
	if h.cfg.Health != nil {
		checks = map[string]Check{}
		for _, c := range h.cfg.Health(ctx) {
			checks[c.Service] = c
		}
	}
	out := make([]serviceStatus, 0, len(names))
	for _, n := range names {
		s := serviceStatus{Name: n, Enabled: slices.Contains(h.cfg.Services, n), State: "disabled"}
		if s.Enabled {
			s.State = "running"
			if c, ok := checks[n]; ok {
				s.State, s.Detail = "ok", c.Detail
				if !c.OK {
					s.State = "failed"
				}
			}
		}
		out = append(out, s)
	}
	return out
}

func cacheReply(stats func() cache.Stats) *cacheStatus {
	st := stats()
	c := &cacheStatus{
		CurrItems: st.CurrItems, TotalItems: st.TotalItems, Bytes: st.Bytes, LimitMaxBytes: st.LimitMaxBytes,
		Evictions: st.Evictions, Reclaimed: st.Reclaimed, GetHits: st.GetHits, GetMisses: st.GetMisses,
		GetExpired: st.GetExpired, CmdGet: st.CmdGet, CmdSet: st.CmdSet, CurrConnections: st.CurrConnections,
		MaxConnections: st.MaxConnections, TotalConns: st.TotalConns, BytesRead: st.BytesRead,
		BytesWritten: st.BytesWritten, Uptime: st.Uptime,
	}
	if n := st.GetHits + st.GetMisses; n > 0 {
		r := float64(st.GetHits) / float64(n)
		c.HitRatio = &r
	}
	return c
}

func etcdReply(status func() (kvstore.Status, error)) (*etcdStatus, []Alarm) {
	st, err := status()
	if err != nil {
		return &etcdStatus{Error: err.Error(), Members: []etcdMember{}}, nil
	}
	e := &etcdStatus{
		MemberID: hexID(st.ID), RaftTerm: st.Term, DBSize: st.DBSize, DBSizeInUse: st.DBSizeInUse,
		DBQuota: st.DBQuota, IsLearner: st.IsLearner, Version: st.Version, ClusterVersion: st.ClusterVersion,
		Members: make([]etcdMember, 0, len(st.Members)),
	}
	if st.Leader != 0 {
		e.Leader = hexID(st.Leader)
	}
	for _, m := range st.Members {
		if m.ID == st.Leader && st.Leader != 0 {
			e.LeaderName = m.Name
		}
		e.Members = append(e.Members, etcdMember{ID: hexID(m.ID), Name: m.Name, PeerURLs: nonNil(m.PeerURLs),
			ClientURLs: nonNil(m.ClientURLs), IsLearner: m.IsLearner, IsLeader: m.ID == st.Leader, IsSelf: m.ID == st.ID})
	}
	var alarms []Alarm
	for _, a := range st.Alarms {
		res, member, _ := strings.Cut(a, " on ") // "NOSPACE on 8e9e05c52164694d"
		alarms = append(alarms, Alarm{Service: "etcd", Resource: res, Detail: "raised by member " + member})
	}
	return e, alarms
}

func clusterReply(nodes []ClusterNode) *clusterStatus {
	c := &clusterStatus{Nodes: make([]clusterNode, 0, len(nodes))}
	var leaderTerm uint64
	for _, n := range nodes {
		cn := clusterNode{Name: n.Name, Self: n.Self, Role: "unreachable", Broker: "unknown", Reachable: n.Reachable,
			Error: n.Err}
		if n.Reachable {
			cn.IsLeader, cn.Active, cn.Term, cn.Commit, cn.Applied, cn.Forwarded = n.Leader, n.Active, n.Term, n.Commit, n.Applied, n.Forwarded
			cn.Role, cn.Broker = "follower", "standby"
			if n.Leader {
				cn.Role = "leader"
			} else if n.Learner {
				cn.Role = "learner"
			}
			if n.Active {
				cn.Broker = "active"
			}
		}
		// Two nodes may both say leader for a moment (a deposed one that
		// has not yet heard of the new term): the higher term leads.
		if cn.IsLeader && (c.Leader == "" || cn.Term > leaderTerm) {
			c.Leader, leaderTerm = cn.Name, cn.Term
		}
		c.Nodes = append(c.Nodes, cn)
	}
	return c
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
