package mgmtapi

import (
	"errors"
	"net"
	"net/http"
	"slices"

	"substrate/broker"
)

// The tags that grant use of the management API, as RabbitMQ's.
const (
	tagAdmin      = "administrator"
	tagMonitoring = "monitoring"
	tagPolicy     = "policymaker"
	tagManagement = "management"
)

func hasTag(u broker.User, tags ...string) bool {
	for _, t := range tags {
		if slices.Contains(u.Tags, t) {
			return true
		}
	}
	return false
}

func isAdmin(u broker.User) bool   { return hasTag(u, tagAdmin) }
func isMonitor(u broker.User) bool { return hasTag(u, tagAdmin, tagMonitoring) }

// authenticate checks r's basic auth and the route's access, answering
// as RabbitMQ's rabbit_mgmt_util does when they fail:
//
//   - no credentials: 401 with WWW-Authenticate and no body;
//   - wrong ones: 401 {"error":"not_authorized","reason":"Login failed"};
//   - guest from afar: 401 not_authorised "User can only log in via localhost";
//   - no management tag: 401 not_authorised "Not management user";
//   - too few tags: "Not administrator user", "Not monitor user", and
//     for writing policies without policymaker "User not authorised to
//     access object";
//   - no access to the path's vhost: "User not authorised to access
//     virtual host"; a vhost that does not exist: 404.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request, acc access, vars map[string]string) (*request, bool) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		w.WriteHeader(http.StatusUnauthorized)
		return nil, false
	}
	var peer net.Addr
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		peer = ap
	}
	u, err := a.b.CheckLogin(name, pass, peer)
	switch {
	case errors.Is(err, broker.ErrLoopbackOnly):
		notAuthorised(w, "User can only log in via localhost")
		return nil, false
	case err != nil:
		w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		writeError(w, http.StatusUnauthorized, "not_authorized", "Login failed")
		return nil, false
	}
	if !hasTag(u, tagAdmin, tagMonitoring, tagPolicy, tagManagement) {
		notAuthorised(w, "Not management user")
		return nil, false
	}
	rq := &request{user: u, pass: pass, vars: vars, params: r.URL.Query()}
	switch acc {
	case accAdmin:
		if !isAdmin(u) {
			notAuthorised(w, "Not administrator user")
			return nil, false
		}
	case accMonitor:
		if !isMonitor(u) {
			notAuthorised(w, "Not monitor user")
			return nil, false
		}
	case accPolicy:
		if !hasTag(u, tagAdmin, tagPolicy) {
			notAuthorised(w, "User not authorised to access object")
			return nil, false
		}
	}
	if vh, ok := vars["vhost"]; ok && (acc == accVHost || acc == accPolicy) {
		if !a.vhostExists(vh) {
			// RabbitMQ checks the vhost's existence (resource_exists)
			// after authorisation; a monitor sees 404, others too.
			if !isMonitor(u) && !a.canAccess(u, vh) {
				notAuthorised(w, "User not authorised to access virtual host")
				return nil, false
			}
			return rq, true // the handler answers 404
		}
		if !a.canAccess(u, vh) {
			notAuthorised(w, "User not authorised to access virtual host")
			return nil, false
		}
	}
	return rq, true
}

func notAuthorised(w http.ResponseWriter, reason string) {
	writeError(w, http.StatusUnauthorized, "not_authorised", reason)
}

func (a *API) vhostExists(name string) bool {
	return slices.Contains(a.b.VHosts(), name)
}

// canAccess reports whether u may see vhost's objects: monitors and
// administrators see every vhost, others those they have permissions on
// (rabbit_mgmt_util:user_matches_vhost / list_visible_vhosts).
func (a *API) canAccess(u broker.User, vhost string) bool {
	if isMonitor(u) {
		return true
	}
	for _, p := range a.b.Permissions(vhost) {
		if p.User == u.Name {
			return true
		}
	}
	return false
}

// visibleVHosts lists the vhosts u sees.
func (a *API) visibleVHosts(u broker.User) []string {
	var out []string
	for _, vh := range a.b.VHosts() {
		if a.canAccess(u, vh) {
			out = append(out, vh)
		}
	}
	return out
}

// vhostsOf is the vhost of the path, or every vhost u sees.
func (a *API) vhostsOf(rq *request) []string {
	if vh, ok := rq.vars["vhost"]; ok {
		if !a.vhostExists(vh) {
			return nil
		}
		return []string{vh}
	}
	return a.visibleVHosts(rq.user)
}
