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
