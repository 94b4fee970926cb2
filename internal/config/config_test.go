package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFS() (*flag.FlagSet, *string, *int, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	dir := fs.String("data-dir", "./data", "")
	port := fs.Int("amqp-port", 5672, "")
	host := fs.String("host", "127.0.0.1", "")
	fs.String("config", "", "")
	return fs, dir, port, host
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "substrate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	fs, dir, port, host := newFS()
	if err := fs.Parse([]string{"--data-dir", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	set := Explicit(fs)
	env := map[string]string{
		"SUBSTRATE_DATA_DIR":  "/from/env", // shadowed by the flag
		"SUBSTRATE_AMQP_PORT": "5673",
		"SUBSTRATE_BOGUS":     "x",
	}
	res, err := ApplyEnv(fs, "SUBSTRATE", env, set)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Shadowed, ",") != "SUBSTRATE_DATA_DIR" || strings.Join(res.Unknown, ",") != "SUBSTRATE_BOGUS" {
		t.Errorf("result = %+v", res)
	}
	path := writeFile(t, "data-dir: /from/file\namqp-port: 5674\nhost: [10.0.0.11, 127.0.0.1]\n")
	values, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ApplyFile(fs, path, values, set); err != nil {
		t.Fatal(err)
	}
	if *dir != "/from/flag" || *port != 5673 || *host != "10.0.0.11,127.0.0.1" {
		t.Errorf("got dir=%q port=%d host=%q", *dir, *port, *host)
	}
}

func TestEnvBadValueNamesVariable(t *testing.T) {
	fs, _, _, _ := newFS()
	_, err := ApplyEnv(fs, "SUBSTRATE", map[string]string{"SUBSTRATE_AMQP_PORT": "many"}, Explicit(fs))
	if err == nil || !strings.Contains(err.Error(), "SUBSTRATE_AMQP_PORT") {
		t.Fatalf("err = %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":   {"amqp_port: 1\n", `unknown key "amqp_port"`},
		"forbidden key": {"config: other.yaml\n", `unknown key "config"`},
		"bad value":     {"amqp-port: lots\n", `key "amqp-port": invalid value "lots"`},
		"nested map":    {"host: {a: b}\n", `key "host": value must be`},
		"not yaml":      {"host: [unclosed\n", "substrate.yaml"},
	} {
		t.Run(name, func(t *testing.T) {
			fs, _, _, _ := newFS()
			path := writeFile(t, tc.body)
			values, err := ReadFile(path)
			if err == nil {
				err = ApplyFile(fs, path, values, Explicit(fs), "config")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("SUBSTRATETEST_X_Y", "1")
	if got := Environ("SUBSTRATETEST"); got["SUBSTRATETEST_X_Y"] != "1" || len(got) != 1 {
		t.Fatalf("Environ = %v", got)
	}
}
