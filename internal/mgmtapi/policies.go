package mgmtapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"substrate/broker"
)

func (a *API) policyRoutes(add func(m, p string, acc access, h handler)) {
	const G, P, D = http.MethodGet, http.MethodPut, http.MethodDelete
	for _, op := range []bool{false, true} {
		base, accW := "policies", accPolicy
		if op {
			base, accW = "operator-policies", accAdmin
		}
		accR := accMgmt
		if op {
			accR = accAdmin
		}
		add(G, base, accR, a.policies(op))
		add(G, base+"/{vhost}", accVHost, a.policies(op))
		add(G, base+"/{vhost}/{name}", accVHost, a.policy(op))
		add(P, base+"/{vhost}/{name}", accW, a.putPolicy(op))
		add(D, base+"/{vhost}/{name}", accW, a.deletePolicy(op))
	}
}

func policyObj(p broker.Policy) obj {
	def := obj{}
	for k, v := range p.Definition {
		def[k] = v
	}
	applyTo := p.ApplyTo
	if applyTo == "" {
		applyTo = broker.ApplyToAll
	}
	return obj{"vhost": p.VHost, "name": p.Name, "pattern": p.Pattern, "apply-to": applyTo, "definition": def, "priority": p.Priority}
}

func (a *API) listPolicies(op bool, vhost string) []broker.Policy {
	if op {
		return a.b.OperatorPolicies(vhost)
	}
	return a.b.Policies(vhost)
}

func (a *API) policies(op bool) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		var out []obj
		for _, vh := range a.vhostsOf(rq) {
			for _, p := range a.listPolicies(op, vh) {
				out = append(out, policyObj(p))
			}
		}
		a.list(w, rq, out)
	}
}

func (a *API) findPolicy(op bool, vhost, name string) (broker.Policy, bool) {
	for _, p := range a.listPolicies(op, vhost) {
		if p.Name == name {
			return p, true
		}
	}
	return broker.Policy{}, false
}

func (a *API) policy(op bool) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		if op && !isAdmin(rq.user) {
			notAuthorised(w, "Not administrator user")
			return
		}
		p, ok := a.findPolicy(op, rq.v("vhost"), rq.v("name"))
		if !ok {
			notFound(w)
			return
		}
		a.one(w, rq, policyObj(p))
	}
}

// putPolicy is PUT /api/policies/{vhost}/{name}: pattern and definition
// required, apply-to (default all) and priority (default 0) optional;
// a definition RabbitMQ would refuse is 400 "Validation failed...".
func (a *API) putPolicy(op bool) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		body, ok := readBody(w, r)
		if !ok || missingKeys(w, body, "pattern", "definition") {
			return
		}
		vh, name := rq.v("vhost"), rq.v("name")
		if !a.vhostExists(vh) {
			notFound(w)
			return
		}
		raw, _ := json.Marshal(body["definition"])
		def, err := broker.ParsePolicyDefinition(raw)
		if err != nil {
			badRequest(w, "not_json")
			return
		}
		prio := int64(0)
		if v, ok := body["priority"]; ok && v != nil {
			if prio, ok = intField(v); !ok {
				badRequest(w, "Validation failed\n\npriority must be an integer\n")
				return
			}
		}
		p := broker.Policy{VHost: vh, Name: name, Pattern: strArg(body, "pattern"), ApplyTo: strArg(body, "apply-to"),
			Definition: def, Priority: int(prio)}
		_, existed := a.findPolicy(op, vh, name)
		if op {
			err = a.b.SetOperatorPolicy(ctx(r), p)
		} else {
			err = a.b.SetPolicy(ctx(r), p)
		}
		var ve *broker.ValidationError
		switch {
		case errors.As(err, &ve):
			badRequest(w, ve.Error()+"\n")
			return
		case errors.Is(err, broker.ErrNotFound):
			notFound(w)
			return
		case err != nil:
			badRequest(w, err.Error())
			return
		}
		noContent(w, !existed)
	}
}

func (a *API) deletePolicy(op bool) handler {
	return func(w http.ResponseWriter, r *http.Request, rq *request) {
		var err error
		if op {
			err = a.b.ClearOperatorPolicy(ctx(r), rq.v("vhost"), rq.v("name"))
		} else {
			err = a.b.ClearPolicy(ctx(r), rq.v("vhost"), rq.v("name"))
		}
		if errors.Is(err, broker.ErrNotFound) {
			notFound(w)
			return
		} else if err != nil {
			badRequest(w, err.Error())
			return
		}
		noContent(w, false)
	}
}
