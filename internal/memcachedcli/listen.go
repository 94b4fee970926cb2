package memcachedcli

import (
	"fmt"
	"strings"
)

// ListenAddr is one -l item taken apart the way memcached 1.6.18's
// server_sockets does it. Host is not resolved: it may be a name
// ("controller"), an IPv4 or IPv6 literal, or "" for all interfaces.
type ListenAddr struct {
	Item     string // the -l item as written
	Host     string // "" for "*" or when no -l was given
	Port     int    // effective TCP port, as bound (memcached truncates to 16 bits)
	NoTLS    bool   // "notls:" prefix: plain TCP on a TLS-enabled server
	Protocol string // from a "proto[ascii|binary|negotiating]:" prefix; "" = -B
	Tag      string // from a "tag[name]:" prefix
}

// ListenAddrs splits the -l items into hosts and ports. An item's own
// port overrides -p (after memcached's -U rule). With no -l it returns one
// address with an empty Host. The errors are memcached's bind-time errors
// for malformed items (exit 71), which memcached only reaches when TCP is
// enabled (Port != 0 and no -s); host names are left for the caller to
// resolve, and "failed to listen" for them is the caller's to report.
func (o Options) ListenAddrs() ([]ListenAddr, error) {
	port := o.effectivePort()
	if len(o.Listen) == 0 {
		return []ListenAddr{{Port: port & 0xffff}}, nil
	}
	var out []ListenAddr
	for _, item := range o.Listen {
		a, msg := o.parseListenItem(item, port)
		if msg != "" {
			// memcached prints the item error, then perror() of its
			// listen failure with errno still 0.
			return nil, &Error{Msg: msg + fmt.Sprintf("failed to listen on one of interface(s) %s: Success", o.Inter), Code: ExitOSErr}
		}
		out = append(out, a)
	}
	return out, nil
}

// parseListenItem returns the address, or memcached's message (with its
// trailing newline, or without one where memcached omits it).
func (o Options) parseListenItem(item string, port int) (ListenAddr, string) {
	a := ListenAddr{Item: item, Port: port}
	p := item
	if strings.HasPrefix(p, "notls") {
		if !o.TLS {
			return a, "'notls' option is valid only when SSL is enabled\n"
		}
		a.NoTLS = true
		p = cut(p, len("notls")+1)
	}
	if strings.HasPrefix(p, "proto") {
		rest := p[len("proto"):]
		e := strings.IndexByte(rest, ']')
		if !strings.HasPrefix(rest, "[") || e < 0 {
			return a, fmt.Sprintf("Invalid protocol spec: \"%s\"\n", rest)
		}
		name := rest[1:e]
		switch name {
		case "ascii", "binary", "negotiating":
			a.Protocol = name
		case "proxy":
			return a, fmt.Sprintf("Server not built with proxy: \"%s\"\n", p[:len("proto")+e])
		}
		p = cut(rest, e+2) // skip "]:"
	}
	if strings.HasPrefix(p, "tag") {
		rest := p[len("tag"):]
		e := strings.IndexByte(rest, ']')
		if !strings.HasPrefix(rest, "[") || e < 0 {
			return a, fmt.Sprintf("Invalid tag in socket config: \"%s\"\n", rest)
		}
		tag := rest[1:e]
		if len(tag) < 1 || len(tag) > 8 {
			return a, fmt.Sprintf("Listener tags must be between 1 and 8 characters: \"%s\"\n", tag)
		}
		a.Tag = tag
		p = cut(rest, e+2)
	}
	host, bracketed := "", false
	if strings.HasPrefix(p, "[") {
		// RFC 3986 "[v6]" or "[v6]:port"; anything between "]" and ":"
		// is ignored, as memcached does.
		e := strings.IndexByte(p, ']')
		if e < 0 {
			return a, fmt.Sprintf("Invalid IPV6 address: \"%s\"", p) // no newline in 1.6.18
		}
		host, bracketed = p[1:e], true
		p = p[e+1:]
	}
	if s := strings.IndexByte(p, ':'); s >= 0 {
		// One colon: host:port. Several colons: a bare IPv6 address,
		// unless the address was bracketed.
		if bracketed || !strings.Contains(p[s+1:], ":") {
			n, ok := safeStrtol(p[s+1:])
			if !ok {
				return a, fmt.Sprintf("Invalid port number: \"%s\"\n", p[s+1:])
			}
			a.Port = n
			p = p[:s]
		}
	}
	if !bracketed {
		host = p
	}
	if host == "*" {
		host = ""
	}
	a.Host = host
	a.Port &= 0xffff
	return a, ""
}

// cut returns s[n:], or "" when s is shorter (memcached steps over a
// separator it does not check).
func cut(s string, n int) string {
	if n >= len(s) {
		return ""
	}
	return s[n:]
}
