package mgmtapi

import (
	"errors"
	"net/http"
	"sort"

	"substrate/broker"
)

// limitRoutes adds /api/vhost-limits (RabbitMQ's max-connections and
// max-queues per vhost; rabbitmqadmin list/declare/delete vhost_limit).
func (a *API) limitRoutes(add func(m, p string, acc access, h handler)) {
	add(http.MethodGet, "vhost-limits", accMgmt, a.vhostLimits)
	add(http.MethodGet, "vhost-limits/{vhost}", accVHost, a.vhostLimits)
	add(http.MethodPut, "vhost-limits/{vhost}/{name}", accAdmin, a.putVHostLimit)
	add(http.MethodDelete, "vhost-limits/{vhost}/{name}", accAdmin, a.deleteVHostLimit)
}

func (a *API) vhostLimits(w http.ResponseWriter, r *http.Request, rq *request) {
	all := a.b.VHostLimits()
	var names []string
	for _, vh := range a.vhostsOf(rq) {
		if len(all[vh]) > 0 {
			names = append(names, vh)
		}
	}
	sort.Strings(names)
	out := []obj{}
	for _, vh := range names {
		v := obj{}
		for k, n := range all[vh] {
			v[k] = n
		}
		out = append(out, obj{"vhost": vh, "value": v})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) putVHostLimit(w http.ResponseWriter, r *http.Request, rq *request) {
	body, ok := readBody(w, r)
	if !ok || missingKeys(w, body, "value") {
		return
	}
	vh, name := rq.v("vhost"), rq.v("name")
	n, ok := intField(body["value"])
	if !ok {
		badRequest(w, "Validation failed\n\n"+name+" must be an integer\n")
		return
	}
	l := broker.VHostLimits{}
	for k, v := range a.b.VHostLimits()[vh] {
		l[k] = v
	}
	l[name] = n
	if err := a.b.SetVHostLimits(ctx(r), vh, l); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			notFound(w)
			return
		}
		badRequest(w, "Validation failed\n\n"+err.Error()+"\n")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) deleteVHostLimit(w http.ResponseWriter, r *http.Request, rq *request) {
	vh, name := rq.v("vhost"), rq.v("name")
	cur := a.b.VHostLimits()[vh]
	if _, ok := cur[name]; !ok {
		notFound(w)
		return
	}
	l := broker.VHostLimits{}
	for k, v := range cur {
		if k != name {
			l[k] = v
		}
	}
	if err := a.b.SetVHostLimits(ctx(r), vh, l); err != nil {
		badRequest(w, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parameterRoutes adds /api/parameters: the runtime parameters as the
// definitions export carries them (vhost limits, operator policies), and
// /api/global-parameters.
func (a *API) parameterRoutes(add func(m, p string, acc access, h handler)) {
	add(http.MethodGet, "parameters", accPolicy, a.parameters)
	add(http.MethodGet, "parameters/{component}", accPolicy, a.parameters)
	add(http.MethodGet, "parameters/{component}/{vhost}", accPolicy, a.parameters)
	add(http.MethodGet, "parameters/{component}/{vhost}/{name}", accPolicy, a.parameter)
	add(http.MethodGet, "global-parameters", accAdmin, a.globalParameters)
}

func (a *API) paramList(rq *request) []obj {
	visible := map[string]bool{}
	for _, vh := range a.visibleVHosts(rq.user) {
		visible[vh] = true
	}
	var out []obj
	for _, p := range a.b.ExportDefinitions().Parameters {
		if !visible[p.VHost] {
			continue
		}
		if c, ok := rq.vars["component"]; ok && p.Component != c {
			continue
		}
		if vh, ok := rq.vars["vhost"]; ok && p.VHost != vh {
			continue
		}
		out = append(out, obj{"vhost": p.VHost, "component": p.Component, "name": p.Name, "value": p.Value})
	}
	return out
}

func (a *API) parameters(w http.ResponseWriter, r *http.Request, rq *request) {
	a.list(w, rq, a.paramList(rq))
}

func (a *API) parameter(w http.ResponseWriter, r *http.Request, rq *request) {
	for _, p := range a.paramList(rq) {
		if p["name"] == rq.v("name") {
			a.one(w, rq, p)
			return
		}
	}
	notFound(w)
}

// globalParameters: substrate keeps none.
func (a *API) globalParameters(w http.ResponseWriter, r *http.Request, rq *request) {
	writeJSON(w, http.StatusOK, []obj{})
}
