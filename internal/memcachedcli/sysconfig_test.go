package memcachedcli

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestSeedSysconfig reads the manual install's file (copied verbatim from
// reference/seed/memcached.sysconfig).
func TestSeedSysconfig(t *testing.T) {
	args, err := ParseSysconfig(filepath.Join("testdata", "memcached.sysconfig"))
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := []string{"-p", "11211", "-u", "memcached", "-m", "64", "-c", "1024", "-l", "127.0.0.1,::1,controller"}
	if !reflect.DeepEqual(args, wantArgs) {
		t.Fatalf("args %q, want %q", args, wantArgs)
	}
	o, err := Parse(args)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.Listen, []string{"127.0.0.1", "::1", "controller"}) || o.Port != 11211 ||
		o.User != "memcached" || o.MaxConns != 1024 || o.MemoryMB != 64 {
		t.Fatalf("options %+v", o)
	}
	addrs, err := o.ListenAddrs()
	if err != nil || len(addrs) != 3 || addrs[2].Host != "controller" || addrs[2].Port != 11211 {
		t.Fatalf("ListenAddrs = %+v, %v", addrs, err)
	}
}

func TestSysconfigValid(t *testing.T) {
	cases := []struct {
		name, data string
		want       []string
	}{
		{"empty", "", nil},
		{"comments only", "# c\n; c\n\n   \n", nil},
		{"rdo default", "PORT=\"11211\"\nUSER=\"memcached\"\nMAXCONN=\"1024\"\nCACHESIZE=\"64\"\nOPTIONS=\"\"\n",
			[]string{"-p", "11211", "-u", "memcached", "-m", "64", "-c", "1024"}},
		{"order is the unit's, not the file's", "OPTIONS=-v\nMAXCONN=1\nCACHESIZE=2\nUSER=u\nPORT=3\n",
			[]string{"-p", "3", "-u", "u", "-m", "2", "-c", "1", "-v"}},
		{"missing keys omitted", "USER=memcached\n", []string{"-u", "memcached"}},
		{"empty values omitted", "PORT=\nUSER=''\nOPTIONS=\"\"\n", nil},
		{"last assignment wins", "PORT=1\nPORT=2\n", []string{"-p", "2"}},
		{"unknown keys ignored", "LOGFILE=/var/log/x\nPORT=1\n", []string{"-p", "1"}},
		{"export and blanks", "  export PORT = 5  \r\n\tUSER=a b  \n", []string{"-p", "5", "-u", "a b"}},
		{"single quotes", "OPTIONS='-l \"a b\" -v'\n", []string{"-l", "a b", "-v"}},
		{"escapes", `OPTIONS="-l \"x y\" -o a\\,b \$HOME"` + "\n", []string{"-l", "x y", "-o", "a,b", "$HOME"}},
		{"continuation", "OPTIONS=\"-v \\\n-M\"\nPORT=\\\n7\n", []string{"-p", "7", "-v", "-M"}},
		{"multi-line quote", "OPTIONS=\"-v\n-M\"\nPORT=1\n", []string{"-p", "1", "-v", "-M"}},
		{"puppet log redirection stays literal", `OPTIONS="-l 10.0.0.1 -U 0 -t 4 >> /var/log/memcached.log 2>&1"`,
			[]string{"-l", "10.0.0.1", "-U", "0", "-t", "4", ">>", "/var/log/memcached.log", "2>&1"}},
		{"no final newline", "PORT=1", []string{"-p", "1"}},
	}
	for _, tc := range cases {
		got, err := ParseSysconfigBytes("f", []byte(tc.data))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSysconfigMustFail(t *testing.T) {
	cases := []struct {
		data string
		line int
		msg  string
	}{
		{"PORT=1\nnonsense\n", 2, `expected KEY=VALUE, got "nonsense"`},
		{"PORT 11211\n", 1, `expected KEY=VALUE, got "PORT 11211"`},
		{"\n\n=5\n", 3, `invalid variable name ""`},
		{"1PORT=5\n", 1, `invalid variable name "1PORT"`},
		{"PO-RT=5\n", 1, `invalid variable name "PO-RT"`},
		{"PORT=1\nOPTIONS=\"-l x\n", 2, `OPTIONS: unterminated double quote`},
		{"USER='x\n", 1, `USER: unterminated single quote`},
		{"PORT=1\n\nOPTIONS='-l \"x'\n", 3, `OPTIONS: unterminated double quote`},
		{"OPTIONS=\"-l 'x\"\n", 1, `OPTIONS: unterminated single quote`},
	}
	for _, tc := range cases {
		_, err := ParseSysconfigBytes("/etc/sysconfig/memcached", []byte(tc.data))
		var se *SysconfigError
		if !errors.As(err, &se) || se.Line != tc.line || se.Msg != tc.msg || se.File != "/etc/sysconfig/memcached" {
			t.Errorf("%q: got %v, want line %d %q", tc.data, err, tc.line, tc.msg)
			continue
		}
		if want := "/etc/sysconfig/memcached:" + strconv.Itoa(tc.line) + ": "; !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %q does not name %q", tc.data, err, want)
		}
	}
	if _, err := ParseSysconfig(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzSysconfig(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "memcached.sysconfig"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("OPTIONS=\"-v \\\n-M\"\nPORT=\\\n7\n")
	f.Add("export A='x'\"y\"\\z # c\n; c\n")
	f.Add("OPTIONS='-l \"x'\n")
	f.Fuzz(func(t *testing.T, data string) {
		args, err := ParseSysconfigBytes("f", []byte(data))
		if err != nil {
			var se *SysconfigError
			if !errors.As(err, &se) || se.Line < 1 || se.Line > strings.Count(data, "\n")+1 {
				t.Fatalf("bad error %v for %q", err, data)
			}
			return
		}
		_, _ = Parse(args) // must not panic
	})
}
