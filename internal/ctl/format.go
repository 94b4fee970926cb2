package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"substrate/broker/amqp"
)

// This file renders what list commands return in the formats of
// rabbitmqctl's --formatter: table (the default), json, csv and
// pretty_table, with RabbitMQ 3.10's empty-list behaviour.

// Formatter names --formatter accepts.
const (
	fmtTable  = "table"
	fmtJSON   = "json"
	fmtCSV    = "csv"
	fmtPretty = "pretty_table"
)

// cell is one value of a list row: its text in table and csv output (an
// Erlang term as rabbitmqctl prints it), its JSON value, and its text in
// pretty_table output when that differs (IP addresses print as tuples).
type cell struct {
	text   string
	json   any // marshalled with encoding/json; rawJSON is written as is
	pretty string
}

// rawJSON is JSON written verbatim, for objects whose key order matters.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// marshal is json.Marshal without HTML escaping: rabbitmqctl prints
// "->" and "<" as they are.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func str(s string) cell   { return cell{text: s, json: s} }
func boolean(b bool) cell { return cell{text: strconv.FormatBool(b), json: b} }
func num[T int | int64 | uint64 | float64](n T) cell {
	return cell{text: fmt.Sprint(n), json: n}
}

// ipCell prints an address as rabbitmqctl does: text "127.0.0.1", JSON
// [127,0,0,1], pretty_table {127,0,0,1}.
func ipCell(host string) cell {
	ip := net.ParseIP(host)
	if ip == nil {
		return str(host)
	}
	var parts []int
	if v4 := ip.To4(); v4 != nil {
		for _, b := range v4 {
			parts = append(parts, int(b))
		}
	} else {
		for i := 0; i < 16; i += 2 {
			parts = append(parts, int(ip[i])<<8|int(ip[i+1]))
		}
	}
	strs := make([]string, len(parts))
	for i, p := range parts {
		strs[i] = strconv.Itoa(p)
	}
	return cell{text: host, json: parts, pretty: "{" + strings.Join(strs, ",") + "}"}
}

// tableCell prints an AMQP field table (client properties, consumer
// arguments) as rabbitmqctl does: text [{"key",value},...] and JSON
// [["key","type",value],...], keys sorted (the broker keeps them in a map).
func tableCell(t map[string]any) cell {
	return cell{text: erlTable(t), json: rawJSON(jsonTable(t))}
}

func sortedKeys(t map[string]any) []string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// erlTable is an AMQP table as an Erlang proplist.
func erlTable(t map[string]any) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, k := range sortedKeys(t) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "{%s,%s}", strconv.Quote(k), erlValue(t[k]))
	}
	b.WriteByte(']')
	return b.String()
}

func erlValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []byte:
		return strconv.Quote(string(v))
	case amqp.Table:
		return erlTable(v)
	case map[string]any:
		return erlTable(v)
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = erlValue(x)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case time.Time:
		return strconv.FormatInt(v.Unix(), 10)
	case nil:
		return "undefined"
	}
	return fmt.Sprint(v)
}

// jsonTable is an AMQP table as rabbitmqctl's JSON formatter prints it:
// [["key","type",value],...].
func jsonTable(t map[string]any) string {
	parts := make([]string, 0, len(t))
	for _, k := range sortedKeys(t) {
		typ, val := jsonField(t[k])
		kb, _ := marshal(k)
		parts = append(parts, fmt.Sprintf("[%s,%q,%s]", kb, typ, val))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func jsonField(v any) (string, string) {
	m := func(x any) string { b, _ := marshal(x); return string(b) }
	switch v := v.(type) {
	case string:
		return "longstr", m(v)
	case []byte:
		return "longstr", m(string(v))
	case bool:
		return "bool", m(v)
	case int8:
		return "byte", m(v)
	case int16:
		return "short", m(v)
	case int32:
		return "signedint", m(v)
	case int64:
		return "long", m(v)
	case int:
		return "long", m(v)
	case float32:
		return "float", m(v)
	case float64:
		return "double", m(v)
	case time.Time:
		return "timestamp", m(v.Unix())
	case amqp.Table:
		return "table", jsonTable(v)
	case map[string]any:
		return "table", jsonTable(v)
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			typ, val := jsonField(x)
			parts[i] = fmt.Sprintf("[%q,%s]", typ, val)
		}
		return "array", "[" + strings.Join(parts, ",") + "]"
	case nil:
		return "void", "null"
	}
	return "longstr", m(fmt.Sprint(v))
}

// listing is what a list command returns.
type listing struct {
	cols []string
	rows [][]cell
	// stream: rabbitmqctl streams the rows of info-key commands
	// (list_connections, list_queues, ...): with no rows it prints no
	// header, and no csv at all. Other lists (list_policies,
	// list_permissions) print an empty line instead.
	stream bool
}

// opts are the output options of a command line.
type opts struct {
	formatter string // "" = the command's default
	quiet     bool   // -q: no banner
	silent    bool   // -s: no banner, no table header
	noHeaders bool   // --no-table-headers
}

// render prints l in the chosen format; the banner is printed (or not)
// by the caller.
func (l listing) render(o opts) string {
	switch o.formatter {
	case fmtJSON:
		return l.json()
	case fmtCSV:
		return l.csv()
	case fmtPretty:
		return l.pretty()
	}
	if len(l.rows) == 0 {
		if l.stream {
			return ""
		}
		return "\n"
	}
	var b strings.Builder
	if !o.silent && !o.noHeaders {
		b.WriteString(strings.Join(l.cols, "\t") + "\n")
	}
	for _, r := range l.rows {
		texts := make([]string, len(r))
		for i, c := range r {
			texts[i] = c.text
		}
		b.WriteString(strings.Join(texts, "\t") + "\n")
	}
	return b.String()
}

// json prints one object per row, keys in column order, as
// "[\n{...}\n,{...}\n]".
func (l listing) json() string {
	if len(l.rows) == 0 {
		if l.stream {
			return "[\n]\n"
		}
		return "[]\n"
	}
	var b strings.Builder
	b.WriteString("[\n")
	for i, r := range l.rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jsonObject(l.cols, r) + "\n")
	}
	b.WriteString("]\n")
	return b.String()
}

func jsonObject(cols []string, r []cell) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, c := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(cols[i])
		v, err := marshal(c.json)
		if err != nil {
			v, _ = marshal(c.text)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// csv prints RFC 4180 with every field quoted, as rabbitmqctl does.
func (l listing) csv() string {
	if len(l.rows) == 0 {
		if l.stream {
			return ""
		}
		return "\r\n\r\n\n"
	}
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	var b strings.Builder
	line := func(fields []string) {
		for i, f := range fields {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(q(f))
		}
		b.WriteString("\n")
	}
	line(l.cols)
	for _, r := range l.rows {
		texts := make([]string, len(r))
		for i, c := range r {
			texts[i] = c.text
		}
		line(texts)
	}
	return b.String()
}

// DEC special graphics, as rabbitmqctl's pretty_table draws boxes.
const (
	decOn  = "\x1b(0"
	decOff = "\x1b(B"
	bold   = "\x1b[1m"
	plain  = "\x1b[0m"
)

// pretty prints a box-drawn table, headers in bold.
func (l listing) pretty() string {
	cols, rows := l.cols, make([][]string, len(l.rows))
	for i, r := range l.rows {
		rows[i] = make([]string, len(r))
		for j, c := range r {
			rows[i][j] = c.text
			if c.pretty != "" {
				rows[i][j] = c.pretty
			}
		}
	}
	if len(l.rows) == 0 {
		if l.stream {
			return ""
		}
		cols, rows = []string{"Output"}, [][]string{{"[]"}}
	}
	width := make([]int, len(cols))
	for i, c := range cols {
		width[i] = len([]rune(c))
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	rule := func(left, mid, right string) string {
		parts := make([]string, len(width))
		for i, w := range width {
			parts[i] = strings.Repeat("q", w+2)
		}
		return decOn + left + strings.Join(parts, mid) + right + decOff + "\n"
	}
	line := func(fields []string, hdr bool) string {
		var b strings.Builder
		for i, f := range fields {
			b.WriteString(decOn + "x" + decOff + " ")
			pad := strings.Repeat(" ", width[i]-len([]rune(f)))
			if hdr {
				b.WriteString(bold + f + plain + pad + " ")
			} else {
				b.WriteString(f + pad + " ")
			}
		}
		b.WriteString(decOn + "x" + decOff + "\n")
		return b.String()
	}
	var b strings.Builder
	b.WriteString(rule("l", "w", "k"))
	b.WriteString(line(cols, true))
	for _, r := range rows {
		b.WriteString(rule("t", "n", "u"))
		b.WriteString(line(r, false))
	}
	b.WriteString(rule("m", "v", "j"))
	return b.String()
}

// inUnit prints bytes as status does in unit (status --unit): "bytes",
// or "mb" and "gb" with at most 4 decimals ("0.1262 gb").
func inUnit(n uint64, unit string) string {
	div := 1e9
	switch unit {
	case "bytes":
		return fmt.Sprintf("%d bytes", n)
	case "mb":
		div = 1e6
	}
	v := math.Round(float64(n)/div*1e4) / 1e4
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s + " " + unit
}
