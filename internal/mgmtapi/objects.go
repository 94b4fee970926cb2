package mgmtapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"substrate/broker"
)

// obj is one JSON object of a reply.
type obj = map[string]any

// readBody decodes a request body into a JSON object; RabbitMQ answers
// 400 "not_json" to anything else. An empty body is an empty object.
func readBody(w http.ResponseWriter, r *http.Request) (obj, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		badRequest(w, "not_json")
		return nil, false
	}
	if len(b) > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "bad_request", "request too large")
		return nil, false
	}
	if strings.TrimSpace(string(b)) == "" {
		return obj{}, true
	}
	var m obj
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || m == nil {
		badRequest(w, "not_json")
		return nil, false
	}
	return m, true
}

// maxBody is the largest request body read (RabbitMQ's
// management.http_max_body_size default, 20 MB).
const maxBody = 20 << 20

// missingKeys answers RabbitMQ's "[{key_missing,k1},{key_missing,k2}]"
// when body lacks any of keys.
func missingKeys(w http.ResponseWriter, body obj, keys ...string) bool {
	var miss []string
	for _, k := range keys {
		if _, ok := body[k]; !ok {
			miss = append(miss, "{key_missing,"+k+"}")
		}
	}
	if len(miss) == 0 {
		return false
	}
	badRequest(w, "["+strings.Join(miss, ",")+"]")
	return true
}

// boolArg reads a boolean field as rabbit_mgmt_util:parse_bool does:
// true, false, "true", "false" (rabbitmqadmin sends strings).
func boolArg(body obj, key string, def bool) bool {
	switch v := body[key].(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return def
}

func strArg(body obj, key string) string {
	switch v := body[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// ---- vhosts ----

func (a *API) vhostObj(name string, qs []broker.QueueInfo, st broker.VHostStats) obj {
	desc := ""
	if name == "/" {
		desc = "Default virtual host"
	}
	o := obj{
		"name": name, "description": desc, "tags": []string{}, "tracing": false,
		"default_queue_type": "undefined",
		"metadata":           obj{"description": desc, "tags": []string{}},
		"cluster_state":      obj{a.cfg.Node: "running"},
	}
	var msgs, ready, unacked int
	for _, q := range qs {
		msgs += q.Messages
		ready += q.MessagesReady
		unacked += q.MessagesUnacknowledged
	}
	k := "vhost\x00" + name
	o["messages"] = msgs
	o["messages_ready"] = ready
	o["messages_unacknowledged"] = unacked
	o["messages_details"] = a.sampler.details(k, "messages")
	o["messages_ready_details"] = a.sampler.details(k, "messages_ready")
	o["messages_unacknowledged_details"] = a.sampler.details(k, "messages_unacknowledged")
	a.vhostStats(o, name, st)
	return o
}

func (a *API) vhosts(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	stats := a.b.VHostStats()
	for _, vh := range a.visibleVHosts(rq.user) {
		out = append(out, a.vhostObj(vh, a.b.Queues(vh), stats[vh]))
	}
	a.list(w, rq, out)
}

func (a *API) vhost(w http.ResponseWriter, r *http.Request, rq *request) {
	vh := rq.v("vhost")
	if !a.vhostExists(vh) {
		notFound(w)
		return
	}
	a.one(w, rq, a.vhostObj(vh, a.b.Queues(vh), a.b.VHostStats()[vh]))
}

func (a *API) putVHost(w http.ResponseWriter, r *http.Request, rq *request) {
	if _, ok := readBody(w, r); !ok {
		return
	}
	vh := rq.v("vhost")
	if a.vhostExists(vh) {
		noContent(w, false)
		return
	}
	if err := a.b.AddVHost(ctx(r), vh); err != nil && !errors.Is(err, broker.ErrExists) {
		badRequest(w, err.Error())
		return
	}
	// As RabbitMQ's management plugin, the user who created the vhost
	// gets full permissions on it.
	p := broker.Permission{User: rq.user.Name, VHost: vh, Configure: ".*", Write: ".*", Read: ".*"}
	if err := a.b.SetPermissions(ctx(r), p); err != nil {
		badRequest(w, err.Error())
		return
	}
	noContent(w, true)
}

func (a *API) deleteVHost(w http.ResponseWriter, r *http.Request, rq *request) {
	if err := a.b.DeleteVHost(ctx(r), rq.v("vhost")); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			notFound(w)
			return
		}
		badRequest(w, err.Error())
		return
	}
	noContent(w, false)
}

// ---- users ----

func userObj(u broker.User) obj {
	tags := u.Tags
	if tags == nil {
		tags = []string{}
	}
	return obj{
		"name":              u.Name,
		"password_hash":     base64.StdEncoding.EncodeToString(u.PasswordHash),
		"hashing_algorithm": "rabbit_password_hashing_sha256",
		"tags":              tags,
		"limits":            obj{},
	}
}

func (a *API) findUser(name string) (broker.User, bool) {
	for _, u := range a.b.Users() {
		if u.Name == name {
			return u, true
		}
	}
	return broker.User{}, false
}

func (a *API) users(w http.ResponseWriter, r *http.Request, rq *request) {
	var out []obj
	for _, u := range a.b.Users() {
		out = append(out, userObj(u))
	}
	a.list(w, rq, out)
}

func (a *API) usersWithoutPermissions(w http.ResponseWriter, r *http.Request, rq *request) {
	has := map[string]bool{}
	for _, p := range a.b.Permissions("") {
		has[p.User] = true
	}
	var out []obj
	for _, u := range a.b.Users() {
		if !has[u.Name] {
			out = append(out, userObj(u))
		}
	}
	a.list(w, rq, out)
}

func (a *API) user(w http.ResponseWriter, r *http.Request, rq *request) {
	u, ok := a.findUser(rq.v("user"))
	if !ok {
		notFound(w)
		return
	}
	a.one(w, rq, userObj(u))
}

// parseTags reads "tags" as RabbitMQ 3.10 does: a comma-separated string
// or a list of strings.
func parseTags(v any) []string {
	var tags []string
	switch t := v.(type) {
	case string:
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				tags = append(tags, s)
			}
		}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok && s != "" {
				tags = append(tags, s)
			}
		}
	}
	return tags
}

// putUser creates or updates a user: password (hashed here) or
// password_hash (RabbitMQ's base64 salted SHA-256, as definitions carry
// it), and tags (required).
func (a *API) putUser(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	name := rq.v("user")
	tagsV, hasTags := body["tags"]
	if !hasTags {
		badRequest(w, "tags_not_present")
		return
	}
	tags := parseTags(tagsV)
	var hash []byte
	_, hasPass := body["password"]
	hashStr, hasHash := body["password_hash"].(string)
	if hasHash && !hasPass {
		if alg := strArg(body, "hashing_algorithm"); alg != "" && alg != "rabbit_password_hashing_sha256" {
			badRequest(w, "unsupported hashing_algorithm "+alg+" (substrate stores rabbit_password_hashing_sha256)")
			return
		}
		var err error
		if hash, err = base64.StdEncoding.DecodeString(hashStr); err != nil {
			badRequest(w, []any{"not_base64", hashStr})
			return
		}
	}
	_, existed := a.findUser(name)
	u := broker.User{Name: name, Tags: tags}
	switch {
	case hasPass:
		u.PasswordHash = broker.HashPassword(strArg(body, "password"))
	case hasHash:
		u.PasswordHash = hash
	case existed:
		old, _ := a.findUser(name)
		u.PasswordHash = old.PasswordHash
	}
	if err := a.b.PutUser(ctx(r), u); err != nil {
		badRequest(w, err.Error())
		return
	}
	noContent(w, !existed)
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request, rq *request) {
	if err := a.b.DeleteUser(ctx(r), rq.v("user")); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			notFound(w)
			return
		}
		badRequest(w, err.Error())
		return
	}
	noContent(w, false)
}

// ---- permissions ----

func permObj(p broker.Permission) obj {
	return obj{"user": p.User, "vhost": p.VHost, "configure": p.Configure, "write": p.Write, "read": p.Read}
}

func (a *API) permList(w http.ResponseWriter, rq *request, keep func(broker.Permission) bool) {
	var out []obj
	for _, p := range a.b.Permissions("") {
		if keep(p) {
			out = append(out, permObj(p))
		}
	}
	a.list(w, rq, out)
}

func (a *API) permissions(w http.ResponseWriter, r *http.Request, rq *request) {
	a.permList(w, rq, func(broker.Permission) bool { return true })
}

func (a *API) vhostPermissions(w http.ResponseWriter, r *http.Request, rq *request) {
	if !a.vhostExists(rq.v("vhost")) {
		notFound(w)
		return
	}
	a.permList(w, rq, func(p broker.Permission) bool { return p.VHost == rq.v("vhost") })
}

func (a *API) userPermissions(w http.ResponseWriter, r *http.Request, rq *request) {
	if _, ok := a.findUser(rq.v("user")); !ok {
		notFound(w)
		return
	}
	a.permList(w, rq, func(p broker.Permission) bool { return p.User == rq.v("user") })
}

func (a *API) findPerm(vhost, user string) (broker.Permission, bool) {
	i := slices.IndexFunc(a.b.Permissions(vhost), func(p broker.Permission) bool { return p.User == user })
	if i < 0 {
		return broker.Permission{}, false
	}
	return a.b.Permissions(vhost)[i], true
}

func (a *API) permission(w http.ResponseWriter, r *http.Request, rq *request) {
	p, ok := a.findPerm(rq.v("vhost"), rq.v("user"))
	if !ok {
		notFound(w)
		return
	}
	a.one(w, rq, permObj(p))
}

func (a *API) putPermission(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok || missingKeys(w, body, "configure", "write", "read") {
		return
	}
	vh, user := rq.v("vhost"), rq.v("user")
	if _, ok := a.findUser(user); !ok || !a.vhostExists(vh) {
		badRequest(w, "vhost_or_user_not_found")
		return
	}
	p := broker.Permission{User: user, VHost: vh, Configure: strArg(body, "configure"), Write: strArg(body, "write"), Read: strArg(body, "read")}
	if err := p.Validate(); err != nil {
		badRequest(w, err.Error())
		return
	}
	_, existed := a.findPerm(vh, user)
	if err := a.b.SetPermissions(ctx(r), p); err != nil {
		badRequest(w, err.Error())
		return
	}
	noContent(w, !existed)
}

func (a *API) deletePermission(w http.ResponseWriter, r *http.Request, rq *request) {
	if _, ok := a.findPerm(rq.v("vhost"), rq.v("user")); !ok {
		notFound(w)
		return
	}
	if err := a.b.ClearPermissions(ctx(r), rq.v("user"), rq.v("vhost")); err != nil {
		badRequest(w, err.Error())
		return
	}
	noContent(w, false)
}

// ---- whoami, cluster name, extensions ----

func (a *API) whoami(w http.ResponseWriter, r *http.Request, rq *request) {
	tags := rq.user.Tags
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, http.StatusOK, obj{"name": rq.user.Name, "tags": tags})
}

func (a *API) clusterName(w http.ResponseWriter, r *http.Request, rq *request) {
	writeJSON(w, http.StatusOK, obj{"name": a.cfg.ClusterName})
}

// extensions lists the management UI's JavaScript extensions: substrate
// has none.
func (a *API) extensions(w http.ResponseWriter, r *http.Request, rq *request) {
	writeJSON(w, http.StatusOK, []obj{})
}
