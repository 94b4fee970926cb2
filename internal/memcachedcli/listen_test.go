package memcachedcli

import (
	"errors"
	"reflect"
	"testing"
)

func TestListenAddrs(t *testing.T) {
	cases := []struct {
		args []string
		want []ListenAddr
	}{
		{nil, []ListenAddr{{Port: 11211}}},
		{[]string{"-U", "5"}, []ListenAddr{{Port: 5}}},
		{[]string{"-l", "127.0.0.1,::1,controller"}, []ListenAddr{
			{Item: "127.0.0.1", Host: "127.0.0.1", Port: 11211},
			{Item: "::1", Host: "::1", Port: 11211},
			{Item: "controller", Host: "controller", Port: 11211},
		}},
		{[]string{"-p", "1", "-l", "127.0.0.1:2;[::1]:3,[fe80::1%eth0],*,*:4,::1:5,[::1]x"}, []ListenAddr{
			{Item: "127.0.0.1:2", Host: "127.0.0.1", Port: 2},
			{Item: "[::1]:3", Host: "::1", Port: 3},
			{Item: "[fe80::1%eth0]", Host: "fe80::1%eth0", Port: 1},
			{Item: "*", Host: "", Port: 1},
			{Item: "*:4", Host: "", Port: 4},
			{Item: "::1:5", Host: "::1:5", Port: 1}, // bare IPv6: no port
			{Item: "[::1]x", Host: "::1", Port: 1},  // junk after "]" ignored
		}},
		{[]string{"-l", "h:-1,h:70000,h:4295007107"}, []ListenAddr{
			{Item: "h:-1", Host: "h", Port: 65535},
			{Item: "h:70000", Host: "h", Port: 4464},
			{Item: "h:4295007107", Host: "h", Port: 39811},
		}},
		{[]string{"-Z", "-l", "notls:127.0.0.1:5,proto[ascii]:tag[ab]:10.0.0.1,proto[bogus]:h"}, []ListenAddr{
			{Item: "notls:127.0.0.1:5", Host: "127.0.0.1", Port: 5, NoTLS: true},
			{Item: "proto[ascii]:tag[ab]:10.0.0.1", Host: "10.0.0.1", Port: 11211, Protocol: "ascii", Tag: "ab"},
			{Item: "proto[bogus]:h", Host: "h", Port: 11211},
		}},
	}
	for _, tc := range cases {
		o, err := Parse(tc.args)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.args, err)
		}
		got, err := o.ListenAddrs()
		if err != nil {
			t.Fatalf("ListenAddrs(%q): %v", tc.args, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListenAddrs(%q)\n got %+v\nwant %+v", tc.args, got, tc.want)
		}
	}
}

// listenErrors are -l items memcached refuses when binding (exit 71).
var listenErrors = []struct{ item, msg string }{
	{"127.0.0.1:x", "Invalid port number: \"x\"\nfailed to listen on one of interface(s) 127.0.0.1:x: Success"},
	{"127.0.0.1:", "Invalid port number: \"\"\nfailed to listen on one of interface(s) 127.0.0.1:: Success"},
	{"127.0.0.1:+1x", "Invalid port number: \"+1x\"\nfailed to listen on one of interface(s) 127.0.0.1:+1x: Success"},
	{"[::1]:x", "Invalid port number: \"x\"\nfailed to listen on one of interface(s) [::1]:x: Success"},
	{"[::1", "Invalid IPV6 address: \"[::1\"failed to listen on one of interface(s) [::1: Success"},
	{"notls:127.0.0.1", "'notls' option is valid only when SSL is enabled\nfailed to listen on one of interface(s) notls:127.0.0.1: Success"},
	{"tag[]:127.0.0.1", "Listener tags must be between 1 and 8 characters: \"\"\nfailed to listen on one of interface(s) tag[]:127.0.0.1: Success"},
	{"tag[toolongtag]:127.0.0.1", "Listener tags must be between 1 and 8 characters: \"toolongtag\"\nfailed to listen on one of interface(s) tag[toolongtag]:127.0.0.1: Success"},
	{"tag[ab:127.0.0.1", "Invalid tag in socket config: \"[ab:127.0.0.1\"\nfailed to listen on one of interface(s) tag[ab:127.0.0.1: Success"},
	{"tag[ab]:proto[ascii]:127.0.0.1", "Invalid port number: \"127.0.0.1\"\nfailed to listen on one of interface(s) tag[ab]:proto[ascii]:127.0.0.1: Success"},
	{"proto[ascii:127.0.0.1", "Invalid protocol spec: \"[ascii:127.0.0.1\"\nfailed to listen on one of interface(s) proto[ascii:127.0.0.1: Success"},
	{"proto[proxy]:127.0.0.1", "Server not built with proxy: \"proto[proxy\"\nfailed to listen on one of interface(s) proto[proxy]:127.0.0.1: Success"},
}

func TestListenErrors(t *testing.T) {
	for _, tc := range listenErrors {
		o, err := Parse([]string{"-l", tc.item})
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.ListenAddrs()
		var e *Error
		if !errors.As(err, &e) || e.Msg != tc.msg || e.Code != ExitOSErr {
			t.Errorf("ListenAddrs(-l %q) = %v, want %q exit 71", tc.item, err, tc.msg)
		}
	}
}
