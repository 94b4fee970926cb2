package broker

import (
	"reflect"
	"strings"

	"substrate/broker/amqp"
)

// Exchange types.
const (
	kindDirect  = "direct"
	kindFanout  = "fanout"
	kindTopic   = "topic"
	kindHeaders = "headers"
)

func validKind(k string) bool {
	switch k {
	case kindDirect, kindFanout, kindTopic, kindHeaders:
		return true
	}
	return false
}

// exchange is a vhost's exchange. All fields are guarded by the vhost's
// mu (read-locked on the publish path).
type exchange struct {
	name       string
	kind       string
	durable    bool
	autoDelete bool
	internal   bool
	args       amqp.Table
	policy     string // the policy in effect, "" if none (policy.go)
	ae         string // alternate exchange (argument, else policy), "" if none

	// bindings with this exchange as the source, by bindingKey.
	bindings map[string]*binding
	// inbound bindings with this exchange as the destination.
	inbound map[*binding]struct{}
	// exact holds direct bindings and topic bindings without wildcards,
	// by routing key; other holds the rest (fanout, headers, topic
	// patterns).
	exact map[string][]*binding
	other []*binding
}

// binding routes from an exchange to a queue or an exchange.
type binding struct {
	src    *exchange
	queue  *Queue    // destination queue, or
	dest   *exchange // destination exchange
	key    string
	args   amqp.Table
	words  []string // topic: key split into words
	idxKey string
}

func (b *binding) destName() (string, string) {
	if b.queue != nil {
		return "queue", b.queue.name
	}
	return "exchange", b.dest.name
}

func (b *binding) durable() bool {
	if !b.src.durable {
		return false
	}
	if b.queue != nil {
		return b.queue.durable && b.queue.owner == nil
	}
	return b.dest.durable
}

func (b *binding) def(vhost, src string) BindingDef {
	t, d := b.destName()
	return BindingDef{VHost: vhost, Source: src, Destination: d, DestinationType: t, RoutingKey: b.key, Arguments: copyArgs(b.args)}
}

func bindingKey(destType, dest, key string, args amqp.Table) string {
	return destType + "\x00" + dest + "\x00" + key + "\x00" + argsKey(args)
}

func newExchange(name, kind string, durable, autoDelete, internal bool, args amqp.Table) *exchange {
	return &exchange{name: name, kind: kind, durable: durable, autoDelete: autoDelete, internal: internal, args: args,
		bindings: map[string]*binding{}, inbound: map[*binding]struct{}{}}
}

func (x *exchange) addBinding(b *binding) {
	x.bindings[b.idxKey] = b
	x.index(b)
}

func (x *exchange) index(b *binding) {
	switch {
	case x.kind == kindDirect:
		x.exactAdd(b)
	case x.kind == kindTopic:
		b.words = splitWords(b.key)
		exact := true
		for _, w := range b.words {
			if w == "*" || w == "#" {
				exact = false
			}
		}
		if exact {
			x.exactAdd(b)
		} else {
			x.other = append(x.other, b)
		}
	default:
		x.other = append(x.other, b)
	}
}

func (x *exchange) exactAdd(b *binding) {
	if x.exact == nil {
		x.exact = map[string][]*binding{}
	}
	x.exact[b.key] = append(x.exact[b.key], b)
}

func (x *exchange) removeBinding(b *binding) {
	delete(x.bindings, b.idxKey)
	if l, ok := x.exact[b.key]; ok {
		x.exact[b.key] = removePtr(l, b)
		if len(x.exact[b.key]) == 0 {
			delete(x.exact, b.key)
		}
	}
	x.other = removePtr(x.other, b)
}

func removePtr(l []*binding, b *binding) []*binding {
	for i, e := range l {
		if e == b {
			// Copy so that a reader of an older slice is unaffected.
			out := make([]*binding, 0, len(l)-1)
			out = append(out, l[:i]...)
			return append(out, l[i+1:]...)
		}
	}
	return l
}

// match appends to dst the bindings of x that route a message with this
// routing key and headers.
func (x *exchange) match(dst []*binding, key string, headers amqp.Table) []*binding {
	switch x.kind {
	case kindDirect:
		return append(dst, x.exact[key]...)
	case kindFanout:
		return append(dst, x.other...)
	case kindTopic:
		dst = append(dst, x.exact[key]...)
		if len(x.other) > 0 {
			words := splitWords(key)
			for _, b := range x.other {
				if topicMatch(b.words, words) {
					dst = append(dst, b)
				}
			}
		}
		return dst
	case kindHeaders:
		for _, b := range x.other {
			if headersMatch(b.args, headers) {
				dst = append(dst, b)
			}
		}
	}
	return dst
}

// splitWords splits a topic key at dots, as RabbitMQ: "" has no words,
// "a..b" has an empty middle word.
func splitWords(key string) []string {
	if key == "" {
		return nil
	}
	return strings.Split(key, ".")
}

// topicMatch reports whether the pattern words match the key words: "*"
// matches exactly one word, "#" zero or more.
func topicMatch(pat, words []string) bool {
	for len(pat) > 0 {
		p := pat[0]
		if p == "#" {
			rest := pat[1:]
			for len(rest) > 0 && rest[0] == "#" {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(words); i++ {
				if topicMatch(rest, words[i:]) {
					return true
				}
			}
			return false
		}
		if len(words) == 0 {
			return false
		}
		if p != "*" && p != words[0] {
			return false
		}
		pat, words = pat[1:], words[1:]
	}
	return len(words) == 0
}

// headersMatch is RabbitMQ's headers exchange rule: x-match "all" (the
// default) or "any" (and 3.10's "all-with-x"/"any-with-x", which also
// compare x- keys); binding arguments starting with "x-" are otherwise
// ignored; a void binding value matches any value of that header.
func headersMatch(args, headers amqp.Table) bool {
	mode, _ := args["x-match"].(string)
	all := mode != "any" && mode != "any-with-x"
	withX := strings.HasSuffix(mode, "-with-x")
	matched := false
	for k, want := range args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		got, ok := headers[k]
		eq := ok && (want == nil || valueEqual(want, got))
		if all && !eq {
			return false
		}
		if !all && eq {
			return true
		}
		matched = matched || eq
	}
	return all
}

// valueEqual compares two table values, integers by value whatever their
// width (RabbitMQ compares within a type class).
func valueEqual(a, b any) bool {
	if ai, ok := toInt(a); ok {
		bi, ok := toInt(b)
		return ok && ai == bi
	}
	return reflect.DeepEqual(a, b)
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint64:
		return int64(n), true
	}
	return 0, false
}
