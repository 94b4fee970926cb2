package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dlclark/regexp2/v2"
)

// Policies, as RabbitMQ 3.10's rabbit_policy: a policy of a vhost has a
// name, a pattern (a regular expression matched, unanchored, against a
// queue's or an exchange's name), what it applies to (queues, exchanges
// or all), a priority, and a definition (settings by key). Of the
// policies that match an object, the one with the highest priority
// applies (equal priorities: the first by name; RabbitMQ's choice
// between equals depends on its table's hash order); so does, separately,
// one operator policy, whose numeric limits cap the policy's (the lower
// value wins for message-ttl, expires, max-length, max-length-bytes,
// delivery-limit and the max-in-memory keys).
//
// Queue arguments beat policies: for message-ttl, expires, max-length,
// max-length-bytes and delivery-limit the lower of the x-argument and the
// policy's value applies; for dead-letter-exchange,
// dead-letter-routing-key, overflow and queue-mode the x-argument wins,
// except a quorum queue's overflow, where the policy wins (RabbitMQ
// 3.10's res_min, res_arg and policy_has_precedence). For exchanges the
// alternate-exchange argument beats the policy.
//
// Effects: message-ttl applies to messages enqueued after the change;
// expires re-arms the idle timer from the change; a max-length or
// max-length-bytes a queue is now over drops (dead-letters, reason
// maxlen) its oldest messages if the queue's overflow is drop-head
// before or after the change; dead-letter settings apply to the next
// dead letter; delivery-limit to the next return; alternate-exchange to
// the next publish. queue-mode lazy is what substrate does for every
// durable queue already (a deep backlog is paged out to the message
// store), so default and lazy are accepted and shown and change nothing.
// ha-mode, ha-params, ha-sync-mode, ha-sync-batch-size,
// ha-promote-on-shutdown and ha-promote-on-failure (classic mirroring),
// queue-master-locator, queue-leader-locator, initial-cluster-size,
// dead-letter-strategy, max-in-memory-length, max-in-memory-bytes,
// queue-version, max-age and stream-max-segment-size-bytes are
// validated, stored and shown, and have no effect on one node, as on a
// one-node RabbitMQ (substrate keeps quorum queues in memory and has no
// streams). Unknown keys and invalid values are refused with RabbitMQ's
// texts (ValidationError).
//
// Patterns are PCRE in RabbitMQ; substrate compiles them with regexp2,
// which has the lookarounds deployment tools write ("^(?!amq\.).*").

// Policy is a policy or an operator policy of a vhost. Its JSON is
// RabbitMQ's (definitions export, /api/policies); Operator is not part of
// it (operator policies are listed and stored apart).
type Policy struct {
	VHost      string         `json:"vhost"`
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"` // ApplyToQueues, ApplyToExchanges or ApplyToAll ("" = all)
	Definition map[string]any `json:"definition"`
	Priority   int            `json:"priority"`
	Operator   bool           `json:"-"`
}

// Values of Policy.ApplyTo.
const (
	ApplyToQueues    = "queues"
	ApplyToExchanges = "exchanges"
	ApplyToAll       = "all"
)

// ValidationError is a policy RabbitMQ would refuse. Reason is RabbitMQ's
// text, such as "-1 is not a valid maximum length"; rabbitmqctl prints
// "Error:\nValidation failed\n\n" + Reason + "\n\n" on stderr (exit code 69), the
// management API answers 400 with reason "Validation failed\n\n" +
// Reason + "\n".
type ValidationError struct{ Reason string }

func (e *ValidationError) Error() string { return "Validation failed\n\n" + e.Reason }

func invalid(format string, args ...any) error {
	return &ValidationError{Reason: fmt.Sprintf(format, args...)}
}

// ParsePolicyDefinition decodes a policy definition from JSON as RabbitMQ
// does: integers stay integers (int64) and 1.0 is a float, so that
// validation tells them apart. Callers (rabbitmqctl set_policy, the
// management API) report a decoding error themselves.
func ParsePolicyDefinition(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("broker: trailing data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("broker: policy definition is not a JSON object")
	}
	return jsonNumbers(m).(map[string]any), nil
}

// jsonNumbers turns json.Number values into int64 (integer syntax) or
// float64.
func jsonNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			if i, err := x.Int64(); err == nil {
				return i
			}
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonNumbers(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonNumbers(e)
		}
		return out
	}
	return v
}

// policyInt returns v as an integer: only integer types, never a float
// (RabbitMQ's is_integer).
func policyInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case json.Number:
		if i, err := n.Int64(); err == nil && !strings.ContainsAny(string(n), ".eE") {
			return i, true
		}
	}
	return 0, false
}

// Policy keys RabbitMQ 3.10 (without plugins) knows, in the two groups it
// validates one after the other: rabbit_policies' and the mirroring
// keys of rabbit_mirror_queue_misc. operatorKeys are those an operator
// policy may set.
var (
	policyKeys = map[string]func(v any) error{
		"alternate-exchange":            binaryKey("~p is not a valid alternate exchange name"),
		"dead-letter-exchange":          binaryKey("~p is not a valid dead letter exchange name"),
		"dead-letter-routing-key":       binaryKey("~p is not a valid dead letter routing key"),
		"dead-letter-strategy":          enumKey("~p is not a valid dead letter strategy", "at-most-once", "at-least-once"),
		"message-ttl":                   intKey(0, "~p is not a valid message TTL"),
		"expires":                       intKey(1, "~p is not a valid queue expiry"),
		"max-length":                    intKey(0, "~p is not a valid maximum length"),
		"max-length-bytes":              intKey(0, "~p is not a valid maximum length in bytes"),
		"max-in-memory-length":          intKey(0, "~p is not a valid maximum memory in bytes"),
		"max-in-memory-bytes":           intKey(0, "~p is not a valid maximum memory in bytes"),
		"delivery-limit":                intKey(0, "~p is not a valid delivery limit"),
		"queue-mode":                    enumKey("~p is not a valid queue-mode value", "default", "lazy"),
		"queue-version":                 intEnumKey("~p is not a valid queue-version value", 1, 2),
		"overflow":                      enumKey("~p is not a valid overflow value", overflowDropHead, overflowRejectPublish, overflowRejectPublishDLX),
		"queue-master-locator":          enumKey("~p invalid queue-master-locator value", "min-masters", "client-local", "random"),
		"queue-leader-locator":          enumKey("~p is not a valid queue leader locator value", "client-local", "balanced", "random", "least-leaders"),
		"initial-cluster-size":          intKey(0, "~p is not a valid cluster size"),
		"stream-max-segment-size-bytes": intKey(0, "~p is not a valid segment size"),
		"max-age":                       func(any) error { return nil }, // RabbitMQ 3.10 checks it only on a stream
	}
	haKeys       = []string{"ha-mode", "ha-params", "ha-sync-mode", "ha-sync-batch-size", "ha-promote-on-shutdown", "ha-promote-on-failure"}
	operatorKeys = []string{"delivery-limit", "expires", "max-in-memory-bytes", "max-in-memory-length", "max-length", "max-length-bytes", "message-ttl"}
	// minKeys are merged min(policy, operator policy), and min(x-arg, policy).
	minKeys = []string{"delivery-limit", "expires", "max-in-memory-bytes", "max-in-memory-length", "max-length", "max-length-bytes", "message-ttl"}
)

func binaryKey(format string) func(any) error {
	return func(v any) error {
		if _, ok := v.(string); !ok {
			return invalid(strings.Replace(format, "~p", "%s", 1), erlTerm(v))
		}
		return nil
	}
}

func enumKey(format string, allowed ...string) func(any) error {
	return func(v any) error {
		s, ok := v.(string)
		for _, a := range allowed {
			if ok && s == a {
				return nil
			}
		}
		return invalid(strings.Replace(format, "~p", "%s", 1), erlTerm(v))
	}
}

func intEnumKey(format string, allowed ...int64) func(any) error {
	return func(v any) error {
		n, ok := policyInt(v)
		for _, a := range allowed {
			if ok && n == a {
				return nil
			}
		}
		return invalid(strings.Replace(format, "~p", "%s", 1), erlTerm(v))
	}
}

func intKey(min int64, format string) func(any) error {
	return func(v any) error {
		if n, ok := policyInt(v); !ok || n < min {
			return invalid(strings.Replace(format, "~p", "%s", 1), erlTerm(v))
		}
		return nil
	}
}

// validateHA is rabbit_mirror_queue_misc's validation of the mirroring
// keys, with its texts.
func validateHA(def map[string]any) error {
	mode, hasMode := def["ha-mode"]
	params, hasParams := def["ha-params"]
	_, hasSync := def["ha-sync-mode"]
	_, hasBatch := def["ha-sync-batch-size"]
	_, hasShut := def["ha-promote-on-shutdown"]
	_, hasFail := def["ha-promote-on-failure"]
	if !hasMode {
		if hasParams || hasSync || hasBatch || hasShut || hasFail {
			return invalid("ha-mode must be specified to specify ha-params, ha-sync-mode or ha-promote-on-shutdown")
		}
		return nil
	}
	switch mode {
	case "all":
		if hasParams {
			return invalid(`ha-mode="all" does not take parameters`)
		}
	case "exactly":
		if !hasParams {
			return invalid(`ha-mode="exactly" takes an integer, none given`)
		}
		if n, ok := policyInt(params); !ok || n <= 0 {
			return invalid(`ha-mode="exactly" takes an integer, %s given`, erlTerm(params))
		}
	case "nodes":
		if !hasParams {
			return invalid(`ha-mode="nodes" takes a list, none given`)
		}
		l, ok := params.([]any)
		if !ok {
			return invalid(`ha-mode="nodes" takes a list, %s given`, erlTerm(params))
		}
		if len(l) == 0 {
			return invalid(`ha-mode="nodes" list must be non-empty`)
		}
		for _, e := range l {
			if _, ok := e.(string); !ok {
				return invalid(`ha-mode="nodes" takes a list of strings, %s given`, erlTerm(params))
			}
		}
	default:
		return invalid("%s is not a valid ha-mode value", erlTerm(mode))
	}
	if v, ok := def["ha-sync-mode"]; ok && v != "manual" && v != "automatic" {
		return invalid(`ha-sync-mode must be "manual" or "automatic", got %s`, erlTerm(v))
	}
	if v, ok := def["ha-sync-batch-size"]; ok {
		if n, isInt := policyInt(v); !isInt || n <= 0 {
			return invalid("ha-sync-batch-size takes an integer greater than 0, %s given", erlTerm(v))
		}
	}
	for _, k := range []string{"ha-promote-on-shutdown", "ha-promote-on-failure"} {
		if v, ok := def[k]; ok && v != "always" && v != "when-synced" {
			return invalid(`%s must be "always" or "when-synced", got %s`, k, erlTerm(v))
		}
	}
	return nil
}

// Validate checks a policy as RabbitMQ 3.10 does before storing it, with
// its texts: the pattern compiles, apply-to is known, the definition is
// not empty, each known key's value is valid (rabbit_policies' keys in
// key order, then the mirroring keys), and no key is unknown (for an
// operator policy: outside the numeric limits it may set).
func (p Policy) Validate() error {
	if _, err := compilePattern(p.Pattern); err != nil {
		return invalid("pattern should be regular expression but is invalid: %s", patternError(err))
	}
	switch p.ApplyTo {
	case "", ApplyToQueues, ApplyToExchanges, ApplyToAll:
	default:
		return invalid("apply-to '%s' unrecognised; should be 'queues', 'exchanges' or 'all'", p.ApplyTo)
	}
	if len(p.Definition) == 0 {
		return invalid("no policy provided")
	}
	keys := make([]string, 0, len(p.Definition))
	for k := range p.Definition {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var unknown []string
	for _, k := range keys {
		if p.Operator && !contains(operatorKeys, k) {
			unknown = append(unknown, k)
			continue
		}
		if check, ok := policyKeys[k]; ok {
			if err := check(p.Definition[k]); err != nil {
				return err
			}
		} else if !contains(haKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if !p.Operator {
		if err := validateHA(p.Definition); err != nil {
			return err
		}
	}
	if len(unknown) > 0 {
		parts := make([]string, len(unknown))
		for i, k := range unknown {
			parts[i] = "{" + erlTerm(k) + "," + erlTerm(p.Definition[k]) + "}"
		}
		return invalid("[%s] are not recognised policy settings", strings.Join(parts, ","))
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// compilePattern compiles a policy pattern. The match timeout bounds a
// pathological pattern's backtracking (an object it times out on does
// not match).
func compilePattern(p string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(p, regexp2.None)
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = 100 * time.Millisecond
	return re, nil
}

// patternError renders a compile error as RabbitMQ's {"reason",offset}
// (PCRE's reason texts differ from regexp2's; the shape is RabbitMQ's).
func patternError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " - "); i >= 0 {
		msg = msg[i+3:]
	}
	return "{" + strconv.Quote(msg) + ",0}"
}

// erlTerm renders a JSON value as Erlang's ~p prints it after RabbitMQ's
// JSON decoding: strings as binaries (<<"x">>, each UTF-8 byte as a
// Latin-1 character), integers and floats as Erlang writes them, null,
// true, false, lists and maps (#{<<"k">> => v}).
func erlTerm(v any) string {
	if n, ok := policyInt(v); ok {
		return strconv.FormatInt(n, 10)
	}
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case string:
		return erlBinary(x)
	case float64:
		return erlFloat(x)
	case float32:
		return erlFloat(float64(x))
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = erlTerm(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = erlBinary(k) + " => " + erlTerm(x[k])
		}
		return "#{" + strings.Join(parts, ",") + "}"
	}
	return fmt.Sprint(v)
}

func erlBinary(s string) string {
	printable := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 32 && c <= 126 || c >= 160 || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\b' || c == '\f' || c == 27) {
			printable = false
			break
		}
	}
	var b strings.Builder
	if !printable {
		b.WriteString("<<")
		for i := 0; i < len(s); i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(s[i])))
		}
		b.WriteString(">>")
		return b.String()
	}
	b.WriteString(`<<"`)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\v':
			b.WriteString(`\v`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case 27:
			b.WriteString(`\e`)
		default:
			if c >= 160 {
				b.WriteRune(rune(c)) // the byte as a Latin-1 character
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteString(`">>`)
	return b.String()
}

// erlFloat writes f as Erlang's shortest round-trip form: the shorter of
// plain (100.0) and scientific (1.0e3) notation, plain on a tie.
func erlFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return fmt.Sprint(f)
	}
	digits := strconv.FormatFloat(math.Abs(f), 'e', -1, 64) // d.ddde±XX
	mant, expS, _ := strings.Cut(digits, "e")
	exp, _ := strconv.Atoi(expS)
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	sci := mant + "e" + strconv.Itoa(exp)
	plain := strconv.FormatFloat(math.Abs(f), 'f', -1, 64)
	if !strings.Contains(plain, ".") {
		plain += ".0"
	}
	sign := ""
	if f < 0 {
		sign = "-"
	}
	if len(sci) < len(plain) {
		return sign + sci
	}
	return sign + plain
}

// ---- matching and merging ----

// compiledPolicy is a policy with its compiled pattern.
type compiledPolicy struct {
	Policy
	re *regexp2.Regexp
}

func (p *compiledPolicy) matches(kind, name string) bool {
	if p.ApplyTo != "" && p.ApplyTo != ApplyToAll && p.ApplyTo != kind {
		return false
	}
	ok, err := p.re.MatchString(name)
	return err == nil && ok
}

// policySet is a vhost's policies and operator policies, immutable once
// published (vhost.policies), each list sorted by priority, highest
// first, then by name.
type policySet struct {
	policies, operator []*compiledPolicy
}

// match returns the policy and the operator policy that apply to the
// queue (kind ApplyToQueues) or exchange (ApplyToExchanges) name.
func (ps *policySet) match(kind, name string) (p, op *compiledPolicy) {
	if ps == nil {
		return nil, nil
	}
	for _, x := range ps.policies {
		if x.matches(kind, name) {
			p = x
			break
		}
	}
	if kind == ApplyToQueues {
		for _, x := range ps.operator {
			if x.matches(kind, name) {
				op = x
				break
			}
		}
	}
	return p, op
}

// with returns a copy of ps with p set (replacing the one of the same
// name and kind) or, if del, removed.
func (ps *policySet) with(p *compiledPolicy, del bool) *policySet {
	out := &policySet{}
	if ps != nil {
		out.policies, out.operator = append([]*compiledPolicy(nil), ps.policies...), append([]*compiledPolicy(nil), ps.operator...)
	}
	list := &out.policies
	if p.Operator {
		list = &out.operator
	}
	l := (*list)[:0]
	for _, x := range *list {
		if x.Name != p.Name {
			l = append(l, x)
		}
	}
	if !del {
		l = append(l, p)
	}
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Priority != l[j].Priority {
			return l[i].Priority > l[j].Priority
		}
		return l[i].Name < l[j].Name
	})
	*list = l
	return out
}

func (ps *policySet) get(name string, operator bool) *compiledPolicy {
	if ps == nil {
		return nil
	}
	list := ps.policies
	if operator {
		list = ps.operator
	}
	for _, x := range list {
		if x.Name == name {
			return x
		}
	}
	return nil
}

// effectiveDefinition merges a policy's and an operator policy's
// definitions as rabbit_policy:effective_definition: keys of one only
// as they are, shared numeric limits the lower.
func effectiveDefinition(p, op *compiledPolicy) map[string]any {
	if p == nil && op == nil {
		return nil
	}
	out := map[string]any{}
	if p != nil {
		for k, v := range p.Definition {
			out[k] = v
		}
	}
	if op != nil {
		for k, v := range op.Definition {
			if cur, ok := out[k]; ok && contains(minKeys, k) {
				a, aok := policyInt(cur)
				b, bok := policyInt(v)
				if aok && bok && a <= b {
					continue
				}
			}
			out[k] = v
		}
	}
	return out
}

func clonePolicy(p Policy) Policy {
	if p.Definition != nil {
		d := make(map[string]any, len(p.Definition))
		for k, v := range p.Definition {
			d[k] = v
		}
		p.Definition = d
	}
	return p
}

// ---- applying to queues and exchanges ----

// queuePolicy is what a queue holds of its policies (guarded by Queue.mu).
type queuePolicy struct {
	name, operator string         // the names of the policy and operator policy in effect, "" if none
	def            map[string]any // their effective definition (read-only)
}

// applyPolicyLocked recomputes the settings a policy may change from the
// queue's arguments and the effective policy p (nil: none), and carries
// out what the change implies (see the package comment on policies).
// Caller holds q.mu.
func (q *Queue) applyPolicyLocked(p queuePolicy) {
	q.pol = p
	args := q.args
	pol := p.def
	// numeric: the lower of argument and policy.
	num := func(key string) (int64, bool) {
		a, aok := toInt(args["x-"+key])
		v, pok := policyInt(pol[key])
		switch {
		case aok && pok:
			return min(a, v), true
		case aok:
			return a, true
		case pok:
			return v, true
		}
		return 0, false
	}
	// the argument's string if set, else the policy's (policyWins: the
	// other way round).
	str := func(key string, policyWins bool) (string, bool) {
		a, aok := args["x-"+key].(string)
		v, pok := pol[key].(string)
		if pok && (policyWins || !aok) {
			return v, true
		}
		return a, aok
	}
	oldOverflow, oldExpires := q.overflow, q.expires

	q.expires = 0
	if v, ok := num("expires"); ok && v > 0 {
		q.expires = time.Duration(v) * time.Millisecond
	}
	q.messageTTL = -1
	if v, ok := num("message-ttl"); ok && v >= 0 {
		q.messageTTL = v
	}
	q.maxLength = -1
	if v, ok := num("max-length"); ok && v >= 0 {
		q.maxLength = int(min(v, math.MaxInt32))
	}
	q.maxBytes = -1
	if v, ok := num("max-length-bytes"); ok && v >= 0 {
		q.maxBytes = v
	}
	q.overflow = overflowDropHead
	if v, ok := str("overflow", q.quorum); ok && (v == overflowRejectPublish || v == overflowRejectPublishDLX) {
		q.overflow = v
	}
	if q.quorum && q.overflow == overflowRejectPublishDLX {
		q.overflow = overflowDropHead // RabbitMQ 3.10.8's quorum queues do so
	}
	q.deliveryLimit = -1
	if v, ok := num("delivery-limit"); ok && q.quorum && v >= 0 {
		q.deliveryLimit = v
	}
	q.dlx, q.dlrk = nil, nil
	if v, ok := str("dead-letter-exchange", false); ok {
		q.dlx = &v
	}
	if v, ok := str("dead-letter-routing-key", false); ok {
		q.dlrk = &v
	}

	if q.msgs == nil || q.deleted {
		return // being created
	}
	if oldOverflow == overflowDropHead || q.overflow == overflowDropHead {
		for q.overLimitLocked() {
			h, _ := q.msgs.pop()
			q.dropLocked(h, reasonMaxlen)
		}
	}
	if q.expires != oldExpires {
		if q.expires == 0 {
			q.stopExpiryLocked()
		} else if len(q.consumers) == 0 {
			q.armExpiryLocked()
		}
	}
}

// setPolicy applies the vhost's current policies to q.
func (q *Queue) setPolicy(ps *policySet) {
	p := queuePolicyFor(ps, q.name)
	q.mu.Lock()
	defer q.unlock()
	q.applyPolicyLocked(p)
}

func queuePolicyFor(ps *policySet, name string) queuePolicy {
	p, op := ps.match(ApplyToQueues, name)
	qp := queuePolicy{def: effectiveDefinition(p, op)}
	if p != nil {
		qp.name = p.Name
	}
	if op != nil {
		qp.operator = op.Name
	}
	return qp
}

// setExchangePolicyLocked applies the vhost's policies to x: its policy
// name and its alternate exchange (the argument's, else the policy's).
// Caller holds vh.mu for writing, or x is not yet shared.
func setExchangePolicyLocked(ps *policySet, x *exchange) {
	x.policy, x.ae = "", ""
	p, _ := ps.match(ApplyToExchanges, x.name)
	if p != nil {
		x.policy = p.Name
		if ae, ok := p.Definition["alternate-exchange"].(string); ok {
			x.ae = ae
		}
	}
	if ae, ok := x.args["alternate-exchange"].(string); ok {
		x.ae = ae
	}
}

// alternateLocked follows x's alternate exchange when x routed the
// message nowhere (matched has no more than n entries), as
// rabbit_exchange:route: the alternate exchange's own bindings, and its
// own alternate if it too routes nowhere; an exchange already visited
// stops the chain. Caller holds vh.mu.
func (vh *vhost) alternateLocked(x *exchange, matched []*binding, n int, seen map[*exchange]bool, key string, headers map[string]any) []*binding {
	for len(matched) == n && x.ae != "" {
		ae := vh.exchanges[x.ae]
		if ae == nil || seen[ae] {
			break
		}
		seen[ae] = true
		matched = ae.match(matched, key, headers)
		x = ae
	}
	return matched
}

// ---- the admin API ----

// SetPolicy creates or replaces a policy (rabbitmqctl set_policy, PUT
// /api/policies/vhost/name) and applies it at once to the vhost's
// queues and exchanges. An invalid policy is a *ValidationError; an
// unknown vhost wraps ErrNotFound.
func (s *Server) SetPolicy(ctx context.Context, p Policy) error {
	p.Operator = false
	return s.setPolicy(ctx, p)
}

// SetOperatorPolicy is SetPolicy for operator policies
// (set_operator_policy): they may set only numeric limits, and cap the
// policies' values.
func (s *Server) SetOperatorPolicy(ctx context.Context, p Policy) error {
	p.Operator = true
	return s.setPolicy(ctx, p)
}

// ClearPolicy deletes a policy (clear_policy); a missing one wraps
// ErrNotFound (rabbitmqctl: "Parameter does not exist").
func (s *Server) ClearPolicy(ctx context.Context, vhost, name string) error {
	return s.clearPolicy(ctx, vhost, name, false)
}

// ClearOperatorPolicy deletes an operator policy (clear_operator_policy).
func (s *Server) ClearOperatorPolicy(ctx context.Context, vhost, name string) error {
	return s.clearPolicy(ctx, vhost, name, true)
}

// Policies lists the policies of vhost ("" = every vhost), by vhost,
// then priority (lowest first, as list_policies prints them), then name.
func (s *Server) Policies(vhost string) []Policy { return s.listPolicies(vhost, false) }

// OperatorPolicies lists the operator policies as Policies does.
func (s *Server) OperatorPolicies(vhost string) []Policy { return s.listPolicies(vhost, true) }

func (s *Server) setPolicy(ctx context.Context, p Policy) error {
	p = clonePolicy(p)
	if p.ApplyTo == "" {
		p.ApplyTo = ApplyToAll
	}
	if err := p.Validate(); err != nil {
		return err
	}
	re, _ := compilePattern(p.Pattern)
	cp := &compiledPolicy{Policy: p, re: re}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	vh := s.vhost(p.VHost)
	if vh == nil {
		return fmt.Errorf("broker: vhost %q: %w", p.VHost, ErrNotFound)
	}
	if err := s.defs.PutPolicy(ctx, p); err != nil {
		return err
	}
	vh.setPolicies(vh.policies.Load().with(cp, false))
	return nil
}

func (s *Server) clearPolicy(ctx context.Context, vhost, name string, operator bool) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	vh := s.vhost(vhost)
	if vh == nil {
		return fmt.Errorf("broker: vhost %q: %w", vhost, ErrNotFound)
	}
	cur := vh.policies.Load()
	p := cur.get(name, operator)
	if p == nil {
		return fmt.Errorf("broker: policy %q in vhost %q: %w", name, vhost, ErrNotFound)
	}
	if err := s.defs.DeletePolicy(ctx, vhost, name, operator); err != nil {
		return err
	}
	vh.setPolicies(cur.with(p, true))
	return nil
}

func (s *Server) listPolicies(vhostName string, operator bool) []Policy {
	s.vhMu.RLock()
	vhs := make([]*vhost, 0, len(s.vhosts))
	for n, vh := range s.vhosts {
		if vhostName == "" || n == vhostName {
			vhs = append(vhs, vh)
		}
	}
	s.vhMu.RUnlock()
	var out []Policy
	for _, vh := range vhs {
		ps := vh.policies.Load()
		if ps == nil {
			continue
		}
		list := ps.policies
		if operator {
			list = ps.operator
		}
		for _, p := range list {
			out = append(out, clonePolicy(p.Policy))
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		if out[i].Priority != out[j].Priority {
			return out[i].Priority < out[j].Priority
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// setPolicies publishes a vhost's new policy set and applies it to every
// queue and exchange. It holds vh.cfgMu, so no queue or exchange is
// created meanwhile with the old set (declare holds it too). Caller
// holds Server.adminMu or is Start.
func (vh *vhost) setPolicies(ps *policySet) {
	vh.cfgMu.Lock()
	defer vh.cfgMu.Unlock()
	vh.policies.Store(ps)
	vh.mu.Lock()
	qs := make([]*Queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		qs = append(qs, q)
	}
	for _, x := range vh.exchanges {
		setExchangePolicyLocked(ps, x)
	}
	vh.mu.Unlock()
	for _, q := range qs {
		q.setPolicy(ps) // may dead-letter: no vhost lock held
	}
}

// loadPolicies installs stored policies at Start, before queues and
// exchanges are restored. A policy that no longer validates (stored by
// another version) is logged and left out.
func (s *Server) loadPolicies(set *DefinitionSet) {
	sets := map[*vhost]*policySet{}
	for _, p := range set.Policies {
		vh := s.vhost(p.VHost)
		if vh == nil {
			continue
		}
		p = clonePolicy(p)
		for k, v := range p.Definition {
			p.Definition[k] = normalizeValue(v)
		}
		if err := p.Validate(); err != nil {
			s.log.Warn("amqp: skipping a stored policy that does not validate", "vhost", p.VHost, "policy", p.Name, "operator", p.Operator, "err", err)
			continue
		}
		re, _ := compilePattern(p.Pattern)
		sets[vh] = sets[vh].with(&compiledPolicy{Policy: p, re: re}, false)
	}
	for vh, ps := range sets {
		vh.setPolicies(ps)
	}
}
