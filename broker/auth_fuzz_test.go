package broker

import (
	"strings"
	"testing"

	"substrate/broker/amqp"
)

// FuzzCredentials: the PLAIN and AMQPLAIN responses a client sends in
// connection.start-ok. Whatever the bytes, credentials returns without
// panicking; what it accepts reads back the same when encoded again, and
// a PLAIN user or password never holds the NUL that separates them.
func FuzzCredentials(f *testing.F) {
	f.Add("PLAIN", "\x00guest\x00guest")
	f.Add("PLAIN", "admin\x00guest\x00secret")
	f.Add("PLAIN", "\x00\x00")
	f.Add("PLAIN", "guest")
	amqplain, _ := amqp.AppendTableBody(nil, amqp.Table{"LOGIN": "guest", "PASSWORD": "guest"})
	f.Add("AMQPLAIN", string(amqplain))
	f.Add("AMQPLAIN", string(amqplain[:len(amqplain)-3]))
	odd, _ := amqp.AppendTableBody(nil, amqp.Table{"LOGIN": int32(7), "PASSWORD": amqp.Table{"x": "y"}})
	f.Add("AMQPLAIN", string(odd))
	f.Add("EXTERNAL", "")
	f.Fuzz(func(t *testing.T, mechanism, response string) {
		user, pass, err := credentials(mechanism, response)
		if err != nil {
			if user != "" || pass != "" {
				t.Fatalf("error %v with credentials %q/%q", err, user, pass)
			}
			return
		}
		switch mechanism {
		case "PLAIN":
			if strings.Contains(user, "\x00") || strings.Contains(pass, "\x00") {
				t.Fatalf("NUL inside %q/%q", user, pass)
			}
			if !strings.HasSuffix(response, "\x00"+user+"\x00"+pass) {
				t.Fatalf("%q read as %q/%q", response, user, pass)
			}
			u2, p2, err := credentials("PLAIN", "\x00"+user+"\x00"+pass)
			if err != nil || u2 != user || p2 != pass {
				t.Fatalf("round trip of %q/%q: %q/%q, %v", user, pass, u2, p2, err)
			}
		case "AMQPLAIN":
			enc, err := amqp.AppendTableBody(nil, amqp.Table{"LOGIN": user, "PASSWORD": pass})
			if err != nil {
				return // a long string the table cannot hold again is fine
			}
			u2, p2, err := credentials("AMQPLAIN", string(enc))
			if err != nil || u2 != user || p2 != pass {
				t.Fatalf("round trip of %q/%q: %q/%q, %v", user, pass, u2, p2, err)
			}
		default:
			t.Fatalf("mechanism %q accepted", mechanism)
		}
	})
}
