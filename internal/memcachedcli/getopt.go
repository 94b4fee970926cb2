package memcachedcli

import (
	"fmt"
	"strings"
)

// This file emulates glibc 2.36 getopt_long(3) as memcached 1.6.18 calls
// it: argument permutation (options and words may be mixed), "--" ends the
// options, clustered short flags ("-vvd", "-p11211"), "--name=value" and
// "--name value", unambiguous abbreviations of long names ("--mem" is not,
// "--port" and "--po" are), and glibc's exact error messages.

type argKind int

const (
	noArg argKind = iota
	requiredArg
	optionalArg
)

type longOpt struct {
	name  string
	kind  argKind
	short byte
}

// longOpts is memcached 1.6.18's longopts table, in its order (glibc lists
// ambiguous candidates in table order).
var longOpts = []longOpt{
	{"unix-mask", requiredArg, 'a'},
	{"enable-shutdown", noArg, 'A'},
	{"enable-ssl", noArg, 'Z'},
	{"port", requiredArg, 'p'},
	{"unix-socket", requiredArg, 's'},
	{"udp-port", requiredArg, 'U'},
	{"memory-limit", requiredArg, 'm'},
	{"disable-evictions", noArg, 'M'},
	{"conn-limit", requiredArg, 'c'},
	{"lock-memory", noArg, 'k'},
	{"help", noArg, 'h'},
	{"license", noArg, 'i'},
	{"version", noArg, 'V'},
	{"enable-coredumps", noArg, 'r'},
	{"verbose", optionalArg, 'v'},
	{"daemon", noArg, 'd'},
	{"listen", requiredArg, 'l'},
	{"user", requiredArg, 'u'},
	{"pidfile", requiredArg, 'P'},
	{"slab-growth-factor", requiredArg, 'f'},
	{"slab-min-size", requiredArg, 'n'},
	{"threads", requiredArg, 't'},
	{"enable-largepages", noArg, 'L'},
	{"max-reqs-per-event", requiredArg, 'R'},
	{"disable-cas", noArg, 'C'},
	{"listen-backlog", requiredArg, 'b'},
	{"protocol", requiredArg, 'B'},
	{"max-item-size", requiredArg, 'I'},
	{"enable-sasl", noArg, 'S'},
	{"disable-flush-all", noArg, 'F'},
	{"disable-dumping", noArg, 'X'},
	{"disable-watch", noArg, 'W'},
	{"auth-file", requiredArg, 'Y'},
	{"memory-file", requiredArg, 'e'},
	{"extended", requiredArg, 'o'},
	{"napi-ids", requiredArg, 'N'},
}

// shortOpts maps memcached 1.6.18's short option letters to whether they
// take an argument ("-D" has no long form).
var shortOpts = func() map[byte]argKind {
	m := map[byte]argKind{'D': requiredArg}
	for _, o := range longOpts {
		k := o.kind
		if k == optionalArg {
			k = noArg // "v" in the short option string
		}
		m[o.short] = k
	}
	return m
}()

// getopt walks an argument list. Each call to next returns one option
// letter and its argument, done at the end, or an *Error carrying glibc's
// message followed by memcached's reaction to '?'.
type getopt struct {
	args       []string
	i          int    // next argument index
	cluster    string // rest of a short-option cluster being processed
	positional []string
}

func (g *getopt) next() (opt byte, arg string, hasArg bool, done bool, err *Error) {
	if g.cluster == "" {
		for {
			if g.i >= len(g.args) {
				return 0, "", false, true, nil
			}
			a := g.args[g.i]
			g.i++
			switch {
			case a == "--":
				g.positional = append(g.positional, g.args[g.i:]...)
				g.i = len(g.args)
				return 0, "", false, true, nil
			case strings.HasPrefix(a, "--"):
				return g.long(a[2:])
			case len(a) > 1 && a[0] == '-':
				g.cluster = a[1:]
			default:
				g.positional = append(g.positional, a) // permuted away
				continue
			}
			break
		}
	}
	c := g.cluster[0]
	g.cluster = g.cluster[1:]
	kind, ok := shortOpts[c]
	if !ok {
		return 0, "", false, false, getoptError(fmt.Sprintf("%s: invalid option -- '%s'", progName, []byte{c}))
	}
	if kind == noArg {
		return c, "", false, false, nil
	}
	if g.cluster != "" {
		arg, g.cluster = g.cluster, ""
		return c, arg, true, false, nil
	}
	if g.i >= len(g.args) {
		return 0, "", false, false, getoptError(fmt.Sprintf("%s: option requires an argument -- '%s'", progName, []byte{c}))
	}
	arg = g.args[g.i]
	g.i++
	return c, arg, true, false, nil
}

// long handles "--name[=value]" (name is what follows "--").
func (g *getopt) long(nameValue string) (byte, string, bool, bool, *Error) {
	name, value, hasValue := strings.Cut(nameValue, "=")
	var found *longOpt
	for i := range longOpts {
		if longOpts[i].name == name {
			found = &longOpts[i]
			break
		}
	}
	if found == nil {
		var cands []*longOpt
		for i := range longOpts {
			if strings.HasPrefix(longOpts[i].name, name) {
				cands = append(cands, &longOpts[i])
			}
		}
		switch len(cands) {
		case 0:
			return 0, "", false, false, getoptError(fmt.Sprintf("%s: unrecognized option '--%s'", progName, nameValue))
		case 1:
			found = cands[0]
		default:
			var b strings.Builder
			fmt.Fprintf(&b, "%s: option '--%s' is ambiguous; possibilities:", progName, nameValue)
			for _, c := range cands {
				fmt.Fprintf(&b, " '--%s'", c.name)
			}
			return 0, "", false, false, getoptError(b.String())
		}
	}
	switch {
	case hasValue && found.kind == noArg:
		return 0, "", false, false, getoptError(fmt.Sprintf("%s: option '--%s' doesn't allow an argument", progName, found.name))
	case hasValue:
		return found.short, value, true, false, nil
	case found.kind == requiredArg:
		if g.i >= len(g.args) {
			return 0, "", false, false, getoptError(fmt.Sprintf("%s: option '--%s' requires an argument", progName, found.name))
		}
		g.i++
		return found.short, g.args[g.i-1], true, false, nil
	}
	return found.short, "", false, false, nil
}

// getoptError is getopt's message plus memcached's own line for '?'.
func getoptError(msg string) *Error {
	return &Error{Msg: msg + "\nIllegal argument \"?\"", Code: ExitFailure}
}
