package mgmtapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"substrate/broker"
)

// definitionRoutes adds /api/definitions: GET exports RabbitMQ's
// definitions format (broker.ExportDefinitions), POST imports a
// definitions file such as deployment tools write (ImportDefinitions);
// /api/definitions/{vhost} does both for one vhost's objects.
func (a *API) definitionRoutes(add func(m, p string, acc access, h handler)) {
	add(http.MethodGet, "definitions", accAdmin, a.definitions)
	add(http.MethodPost, "definitions", accAdmin, a.postDefinitions)
	add(http.MethodGet, "definitions/{vhost}", accAdmin, a.definitions)
	add(http.MethodPost, "definitions/{vhost}", accAdmin, a.postDefinitions)
}

// vhostSections are the parts of a vhost's definitions (RabbitMQ's
// export of /api/definitions/{vhost}); only policies and parameters keep
// their vhost there.
var vhostSections = []string{"parameters", "policies", "queues", "exchanges", "bindings"}

func (a *API) definitions(w http.ResponseWriter, r *http.Request, rq *request) {
	raw, err := json.Marshal(a.b.ExportDefinitions())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	var all obj
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&all); err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	// Every exchange has "internal", false ones too, as RabbitMQ's.
	if xs, ok := all["exchanges"].([]any); ok {
		for _, x := range xs {
			if m, ok := x.(map[string]any); ok && m["internal"] == nil {
				m["internal"] = false
			}
		}
	}
	out := all
	vh, byVHost := rq.vars["vhost"]
	if byVHost {
		if !a.vhostExists(vh) {
			notFound(w)
			return
		}
		out = obj{"rabbit_version": all["rabbit_version"]}
		for _, sec := range vhostSections {
			kept := []any{}
			items, _ := all[sec].([]any)
			for _, it := range items {
				m, ok := it.(map[string]any)
				if !ok || m["vhost"] != vh {
					continue
				}
				if sec != "policies" && sec != "parameters" {
					delete(m, "vhost")
				}
				kept = append(kept, m)
			}
			out[sec] = kept
		}
	}
	if rq.params.Has("download") {
		w.Header().Set("Content-Disposition", `attachment; filename="`+rq.params.Get("download")+`"`)
	}
	writeJSON(w, http.StatusOK, out)
}

// postDefinitions imports a definitions file: the body is the JSON
// document (as rabbitmqadmin import and deployment tools send it). For
// one vhost, the objects of the vhost sections go into that vhost.
func (a *API) postDefinitions(w http.ResponseWriter, r *http.Request, rq *request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(b) > maxBody {
		badRequest(w, "not_json")
		return
	}
	var defs broker.RabbitDefinitions
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&defs); err != nil {
		badRequest(w, "failed_to_parse_json")
		return
	}
	// Policy definitions as RabbitMQ reads them: integers stay integers.
	for i := range defs.Policies {
		raw, _ := json.Marshal(defs.Policies[i].Definition)
		if defs.Policies[i].Definition, err = broker.ParsePolicyDefinition(raw); err != nil {
			badRequest(w, "not_json")
			return
		}
	}
	if vh, ok := rq.vars["vhost"]; ok {
		if !a.vhostExists(vh) {
			notFound(w)
			return
		}
		defs.Users, defs.VHosts, defs.Permissions, defs.TopicPermissions, defs.GlobalParameters = nil, nil, nil, nil, nil
		for i := range defs.Queues {
			defs.Queues[i].VHost = vh
		}
		for i := range defs.Exchanges {
			defs.Exchanges[i].VHost = vh
		}
		for i := range defs.Bindings {
			defs.Bindings[i].VHost = vh
		}
		for i := range defs.Policies {
			defs.Policies[i].VHost = vh
		}
		for i := range defs.Parameters {
			defs.Parameters[i].VHost = vh
		}
	}
	if err := a.b.ImportDefinitions(ctx(r), defs); err != nil {
		var ve *broker.ValidationError
		if errors.As(err, &ve) {
			badRequest(w, ve.Error()+"\n")
			return
		}
		badRequest(w, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
