package memcachedcli

import (
	"fmt"
	"os"
	"strings"
)

// SysconfigError is a malformed /etc/sysconfig/memcached.
type SysconfigError struct {
	File string
	Line int
	Msg  string
}

func (e *SysconfigError) Error() string {
	return fmt.Sprintf("memcachedcli: %s:%d: %s", e.File, e.Line, e.Msg)
}

// sysconfigFlags maps RDO's variables to the flag its unit passes them to,
// in the unit's order:
//
//	ExecStart=/usr/bin/memcached -p ${PORT} -u ${USER} -m ${CACHESIZE} -c ${MAXCONN} $OPTIONS
var sysconfigFlags = []struct{ key, flag string }{
	{"PORT", "-p"},
	{"USER", "-u"},
	{"CACHESIZE", "-m"},
	{"MAXCONN", "-c"},
}

// ParseSysconfig reads RDO's /etc/sysconfig/memcached and returns the
// memcached arguments its systemd unit would run with; feed them to Parse.
func ParseSysconfig(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("memcachedcli: %w", err)
	}
	return ParseSysconfigBytes(path, data)
}

// ParseSysconfigBytes is ParseSysconfig for data already read; name is
// used in error messages.
//
// The file is read as systemd reads an EnvironmentFile: KEY=VALUE lines,
// blank lines and lines starting with '#' or ';' ignored, an optional
// "export " prefix, values in double quotes (with \" \\ \$ \` escapes),
// single quotes, or bare (to the end of the line, trailing blanks
// dropped), backslash-newline continuing a line; the last assignment
// wins and unknown keys are ignored. PORT, USER, CACHESIZE and MAXCONN
// each become one argument after their flag, as ${VAR} does in the unit;
// a missing or empty one is left out, so memcached's default applies.
// OPTIONS is split into words like $OPTIONS, honouring quotes and
// backslashes. Nothing is resolved: "-l controller" stays a name.
func ParseSysconfigBytes(name string, data []byte) ([]string, error) {
	vars, lines, err := parseEnvFile(name, string(data))
	if err != nil {
		return nil, err
	}
	var args []string
	for _, kf := range sysconfigFlags {
		if v := vars[kf.key]; v != "" {
			args = append(args, kf.flag, v)
		}
	}
	if opts, ok := vars["OPTIONS"]; ok {
		words, msg := splitWords(opts)
		if msg != "" {
			return nil, &SysconfigError{File: name, Line: lines["OPTIONS"], Msg: "OPTIONS: " + msg}
		}
		args = append(args, words...)
	}
	return args, nil
}

// parseEnvFile parses EnvironmentFile syntax, returning the variables and
// the line on which each was last assigned.
func parseEnvFile(name, s string) (map[string]string, map[string]int, error) {
	vars := map[string]string{}
	lines := map[string]int{}
	line := 1
	i := 0
	errorf := func(l int, format string, args ...any) error {
		return &SysconfigError{File: name, Line: l, Msg: fmt.Sprintf(format, args...)}
	}
	isBlank := func(b byte) bool { return b == ' ' || b == '\t' || b == '\r' }
	for i < len(s) {
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		if i >= len(s) {
			break
		}
		if s[i] == '\n' {
			i++
			line++
			continue
		}
		if s[i] == '#' || s[i] == ';' {
			for i < len(s) && s[i] != '\n' {
				i++
			}
			continue
		}
		start := line
		if strings.HasPrefix(s[i:], "export") && i+6 < len(s) && (s[i+6] == ' ' || s[i+6] == '\t') {
			i += 6
			for i < len(s) && isBlank(s[i]) {
				i++
			}
		}
		k := i
		for i < len(s) && s[i] != '=' && s[i] != '\n' && !isBlank(s[i]) {
			i++
		}
		key := s[k:i]
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			end := strings.IndexByte(s[k:], '\n')
			if end < 0 {
				end = len(s) - k
			}
			return nil, nil, errorf(start, "expected KEY=VALUE, got %q", strings.TrimRight(s[k:k+end], "\r"))
		}
		if !validEnvName(key) {
			return nil, nil, errorf(start, "invalid variable name %q", key)
		}
		i++ // '='
		for i < len(s) && isBlank(s[i]) {
			i++
		}
		// Value: bare text, quoted strings and escapes, up to an
		// unquoted newline. Trailing blanks of bare text are dropped.
		var b strings.Builder
		keep := 0 // length of b up to the last byte that is not a trailing bare blank
	value:
		for i < len(s) {
			switch c := s[i]; c {
			case '\n':
				break value
			case '\\':
				if i+1 >= len(s) {
					i++
					break value
				}
				if s[i+1] == '\n' {
					line++
				} else {
					b.WriteByte(s[i+1])
					keep = b.Len()
				}
				i += 2
			case '\'':
				e := strings.IndexByte(s[i+1:], '\'')
				if e < 0 {
					return nil, nil, errorf(line, "%s: unterminated single quote", key)
				}
				q := s[i+1 : i+1+e]
				line += strings.Count(q, "\n")
				b.WriteString(q)
				keep = b.Len()
				i += e + 2
			case '"':
				qline := line
				i++
				for {
					if i >= len(s) {
						return nil, nil, errorf(qline, "%s: unterminated double quote", key)
					}
					c := s[i]
					if c == '"' {
						i++
						break
					}
					if c == '\\' && i+1 < len(s) {
						switch n := s[i+1]; n {
						case '"', '\\', '`', '$':
							b.WriteByte(n)
						case '\n':
							line++
						default:
							b.WriteByte('\\')
							b.WriteByte(n)
						}
						i += 2
						continue
					}
					if c == '\n' {
						line++
					}
					b.WriteByte(c)
					i++
				}
				keep = b.Len()
			default:
				b.WriteByte(c)
				if !isBlank(c) {
					keep = b.Len()
				}
				i++
			}
		}
		vars[key] = b.String()[:keep]
		lines[key] = start
	}
	return vars, lines, nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		letter := c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// splitWords splits s into words the way systemd expands an unbraced
// $VAR (and a shell would, minus expansions): blanks separate words,
// '...' is literal, "..." allows \" and \\ escapes, and a backslash
// outside quotes escapes the next character. It returns a message for an
// unterminated quote.
func splitWords(s string) ([]string, string) {
	var words []string
	var b strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		case c == '\\':
			inWord = true
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case c == '\'':
			inWord = true
			e := strings.IndexByte(s[i+1:], '\'')
			if e < 0 {
				return nil, "unterminated single quote"
			}
			b.WriteString(s[i+1 : i+1+e])
			i += e + 1
		case c == '"':
			inWord = true
			i++
			for ; ; i++ {
				if i >= len(s) {
					return nil, "unterminated double quote"
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				b.WriteByte(s[i])
			}
		default:
			inWord = true
			b.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words, ""
}
