package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"substrate/internal/config"
)

// sampleConfig is the commented config file the packages install as
// /etc/substrate/substrate.yaml.
const sampleConfig = "../../packaging/substrate.yaml"

// TestSampleConfig: every key of the sample config is one serve accepts,
// every serve flag but --config is in it, each commented-out line shows
// the flag's default, and the file as shipped (and with every line
// uncommented) is applied without error.
func TestSampleConfig(t *testing.T) {
	data, err := os.ReadFile(sampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	// "# key: value" is a setting shown with its default; "key: value" a
	// setting the package makes; "#   key: value" (indented) an example.
	commented := regexp.MustCompile(`^# ([a-z0-9-]+):( .*)?$`)
	active := regexp.MustCompile(`^([a-z0-9-]+):( .*)?$`)
	var defaults, shipped []string
	seen := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := commented.FindStringSubmatch(line); m != nil {
			defaults = append(defaults, strings.TrimPrefix(line, "# "))
			seen[m[1]]++
		} else if m := active.FindStringSubmatch(line); m != nil {
			shipped = append(shipped, line)
			seen[m[1]]++
		}
	}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	new(serveFlags).register(fs)
	for k, n := range seen {
		if fs.Lookup(k) == nil || k == "config" {
			t.Errorf("%s: key %q is not a serve flag", sampleConfig, k)
		}
		if n > 1 {
			t.Errorf("%s: key %q appears %d times", sampleConfig, k, n)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && seen[f.Name] == 0 {
			t.Errorf("%s lacks serve's --%s: add it, commented, with its default %q", sampleConfig, f.Name, f.DefValue)
		}
	})

	dir := t.TempDir()
	read := func(name string, lines []string) map[string]string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		values, err := config.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return values
	}
	for k, v := range read("defaults.yaml", defaults) {
		if f := fs.Lookup(k); f != nil && v != f.DefValue {
			t.Errorf("%s: %q shown as %q, but its default is %q", sampleConfig, k, v, f.DefValue)
		}
	}
	// Through parseServe, as serve reads it: the file as shipped, then
	// with every line uncommented.
	for _, lines := range [][]string{shipped, append(defaults, shipped...)} {
		p := filepath.Join(dir, "applied.yaml")
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f, _, err := parseServe([]string{"--config", p}, nil, nil)
		if err != nil {
			t.Fatalf("serve refuses the sample: %v", err)
		}
		if f.dataDir != "/var/lib/substrate" {
			t.Errorf("data-dir = %q, want the package's /var/lib/substrate", f.dataDir)
		}
	}
	// The file as shipped parses as it is.
	if _, err := config.ReadFile(sampleConfig); err != nil {
		t.Fatal(err)
	}
}
