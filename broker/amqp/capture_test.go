package amqp

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The reference captures hold decoded values (Python reprs), not bytes, so
// they cannot be replayed byte for byte. TestCaptureReplay rebuilds every
// captured method from its values, encodes, decodes and compares, which
// checks argument names and order against what RabbitMQ and py-amqp
// exchanged, and that every captured value fits its wire type.

// pyParser parses the subset of Python literals proxy.py writes: dicts,
// lists, str, int, True, False, None.
type pyParser struct {
	s   string
	pos int
}

func (p *pyParser) ws() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == ',') {
		p.pos++
	}
}

func (p *pyParser) value() (any, error) {
	p.ws()
	if p.pos >= len(p.s) {
		return nil, fmt.Errorf("unexpected end")
	}
	switch c := p.s[p.pos]; {
	case c == '{':
		p.pos++
		m := map[string]any{}
		for {
			p.ws()
			if p.pos < len(p.s) && p.s[p.pos] == '}' {
				p.pos++
				return m, nil
			}
			k, err := p.value()
			if err != nil {
				return nil, err
			}
			p.ws()
			if p.pos >= len(p.s) || p.s[p.pos] != ':' {
				return nil, fmt.Errorf("expected ':' at %d", p.pos)
			}
			p.pos++
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			m[k.(string)] = v
		}
	case c == '[':
		p.pos++
		var l []any
		for {
			p.ws()
			if p.pos < len(p.s) && p.s[p.pos] == ']' {
				p.pos++
				return l, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
	case c == '\'' || c == '"':
		return p.str(c)
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		p.pos++
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		return strconv.ParseInt(p.s[start:p.pos], 10, 64)
	}
	for word, v := range map[string]any{"True": true, "False": false, "None": nil} {
		if strings.HasPrefix(p.s[p.pos:], word) {
			p.pos += len(word)
			return v, nil
		}
	}
	return nil, fmt.Errorf("cannot parse at %d: %.20q", p.pos, p.s[p.pos:])
}

func (p *pyParser) str(q byte) (string, error) {
	p.pos++
	var b []byte
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == q:
			p.pos++
			return string(b), nil
		case c == '\\' && p.pos+1 < len(p.s):
			e := p.s[p.pos+1]
			p.pos += 2
			switch e {
			case 'x':
				v, err := strconv.ParseUint(p.s[p.pos:p.pos+2], 16, 8)
				if err != nil {
					return "", err
				}
				b = append(b, byte(v))
				p.pos += 2
			case 'n':
				b = append(b, '\n')
			case 't':
				b = append(b, '\t')
			case 'r':
				b = append(b, '\r')
			default:
				b = append(b, e)
			}
		default:
			b = append(b, c)
			p.pos++
		}
	}
	return "", fmt.Errorf("unterminated string")
}

// goFieldName maps a capture argument name to the generated field name.
func goFieldName(arg string) string {
	switch arg {
	case "class-id":
		return "CauseClassID"
	case "method-id":
		return "CauseMethodID"
	case "nowait":
		return "NoWait"
	}
	var b strings.Builder
	for _, w := range strings.Split(arg, "-") {
		if w == "id" {
			b.WriteString("ID")
			continue
		}
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}

// toTable converts a parsed Python dict to the Table a client would send:
// Python ints as int32 (py-amqp writes I when the value fits).
func toTable(m map[string]any) Table {
	if len(m) == 0 {
		return nil
	}
	t := Table{}
	for k, v := range m {
		t[k] = toFieldValue(v)
	}
	return t
}

func toFieldValue(v any) any {
	switch v := v.(type) {
	case int64:
		if v == int64(int32(v)) {
			return int32(v)
		}
		return v
	case map[string]any:
		t := toTable(v)
		if t == nil {
			t = Table{}
		}
		return t
	case []any:
		out := []any{}
		for _, e := range v {
			out = append(out, toFieldValue(e))
		}
		return out
	}
	return v
}

func loadCaptures(t *testing.T) []capturedMethod {
	t.Helper()
	f, err := os.Open("testdata/captures.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byName := map[string]Method{}
	for _, m := range allMethods() {
		byName[m.Name()] = m
	}
	var out []capturedMethod
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// "C>S ch=1 queue.declare {...}"
		parts := strings.SplitN(line, " ", 4)
		if len(parts) != 4 {
			t.Fatalf("bad line %q", line)
		}
		ch, _ := strconv.Atoi(strings.TrimPrefix(parts[1], "ch="))
		proto, ok := byName[parts[2]]
		if !ok {
			t.Fatalf("capture names unknown method %q", parts[2])
		}
		p := &pyParser{s: parts[3]}
		v, err := p.value()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		m := reflect.New(reflect.TypeOf(proto).Elem())
		for arg, val := range v.(map[string]any) {
			fv := m.Elem().FieldByName(goFieldName(arg))
			if !fv.IsValid() {
				t.Fatalf("%s: no field for argument %q", parts[2], arg)
			}
			switch fv.Kind() {
			case reflect.String:
				fv.SetString(val.(string))
			case reflect.Bool:
				fv.SetBool(val.(bool))
			case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				fv.SetUint(uint64(val.(int64)))
			case reflect.Map:
				fv.Set(reflect.ValueOf(toTable(val.(map[string]any))))
			}
		}
		out = append(out, capturedMethod{dir: parts[0], ch: uint16(ch), m: m.Interface().(Method), line: line})
	}
	return out
}

type capturedMethod struct {
	dir  string
	ch   uint16
	m    Method
	line string
}

func TestCaptureReplay(t *testing.T) {
	caps := loadCaptures(t)
	if len(caps) < 150 {
		t.Fatalf("only %d captured methods", len(caps))
	}
	seen := map[string]bool{}
	for _, c := range caps {
		got := roundTrip(t, c.m)
		seen[got.Name()] = true
		if (c.ch == 0) != (c.m.ClassID() == ClassConnection) {
			t.Errorf("%s on channel %d", c.m.Name(), c.ch)
		}
	}
	for _, n := range []string{"connection.start", "connection.start-ok", "queue.declare", "basic.publish",
		"basic.deliver", "basic.ack", "basic.return", "basic.cancel", "channel.close", "confirm.select"} {
		if !seen[n] {
			t.Errorf("captures lack %s", n)
		}
	}
}

// TestCaptureCloses builds the closes RabbitMQ sent in the captures with
// NewError and compares them with the captured ones.
func TestCaptureCloses(t *testing.T) {
	var closes []Method
	for _, c := range loadCaptures(t) {
		switch c.m.(type) {
		case *ConnectionClose, *ChannelClose:
			if c.dir == "S>C" {
				closes = append(closes, c.m)
			}
		}
	}
	login := NewError(AccessRefused, 0, 0,
		"Login was refused using authentication mechanism %s. For details see the broker logfile.", "AMQPLAIN")
	login.Connection = true // RabbitMQ closes the connection on a failed login (authentication_failure_close)
	ours := []Method{
		login.CloseMethod(),
		NewError(NotAllowed, ClassConnection, MethodConnectionOpen, "vhost %s not found", "novhost").CloseMethod(),
		NewError(PreconditionFailed, ClassQueue, MethodQueueDeclare,
			"inequivalent arg '%s' for queue '%s' in vhost '%s': received none but current is the value '%d' of type '%s'",
			"x-expires", "capterr2_71c3d176", "/", 600000, "signedint").CloseMethod(),
	}
	for _, want := range closes {
		found := false
		for _, m := range ours {
			if reflect.DeepEqual(m, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no NewError reproduces captured %#v", want)
		}
	}
	if len(closes) != 3 {
		t.Errorf("%d server closes in captures, want 3", len(closes))
	}
	// basic.return's reply text is the bare code name.
	if e := NewError(NoRoute, 0, 0, ""); e.Text != "NO_ROUTE" {
		t.Errorf("NO_ROUTE text %q", e.Text)
	}
}
