// Package config gives a flag.FlagSet the precedence operators expect:
// command-line flag, then environment variable, then config file, then the
// flag's default. The same code applies etcd's ETCD_* variables to etcd's
// own flag table and substrate's SUBSTRATE_* variables to ours.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// EnvName is the variable that carries flag name under prefix:
// EnvName("SUBSTRATE", "data-dir") is "SUBSTRATE_DATA_DIR".
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Environ returns the variables of the process environment whose names
// start with prefix and an underscore.
func Environ(prefix string) map[string]string {
	vars := make(map[string]string)
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, prefix+"_") {
			vars[k] = v
		}
	}
	return vars
}

// Explicit reports the flags of fs that were given on the command line.
func Explicit(fs *flag.FlagSet) map[string]bool {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// EnvResult says what ApplyEnv did with each variable it was given.
type EnvResult struct {
	Applied  []string // variables that set a flag
	Shadowed []string // variables ignored because the flag was on the command line
	Unknown  []string // variables with the prefix that name no flag
}

// ApplyEnv sets every flag of fs that is not in set from vars (keyed by
// EnvName(prefix, flag)) when the variable is non-empty, as etcd does with
// its ETCD_* variables, and adds the flags it set to set. An invalid value
// is an error naming the variable.
func ApplyEnv(fs *flag.FlagSet, prefix string, vars map[string]string, set map[string]bool) (EnvResult, error) {
	var res EnvResult
	known := make(map[string]bool)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		key := EnvName(prefix, f.Name)
		known[key] = true
		val := vars[key]
		if val == "" || err != nil {
			return
		}
		if set[f.Name] {
			res.Shadowed = append(res.Shadowed, key)
			return
		}
		if serr := fs.Set(f.Name, val); serr != nil {
			err = fmt.Errorf("invalid value %q for %s: %w", val, key, serr)
			return
		}
		set[f.Name] = true
		res.Applied = append(res.Applied, key)
	})
	if err != nil {
		return res, err
	}
	for k := range vars {
		if !known[k] {
			res.Unknown = append(res.Unknown, k)
		}
	}
	sort.Strings(res.Unknown)
	return res, nil
}

// ReadFile reads a substrate config file: YAML whose top-level keys are the
// flag names of `substrate serve` and whose values are scalars or lists of
// scalars (a list is joined with commas, as the flag takes it).
//
//	data-dir: /var/lib/substrate
//	host: [10.0.0.11, 127.0.0.1]
//	amqp-port: 5672
func ReadFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		s, err := scalar(v)
		if list, ok := v.([]any); ok {
			parts := make([]string, len(list))
			for i, item := range list {
				if parts[i], err = scalar(item); err != nil {
					break
				}
			}
			s = strings.Join(parts, ",")
		}
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %w", path, k, err)
		}
		out[k] = s
	}
	return out, nil
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return fmt.Sprint(v), nil
	case float64: // YAML numbers arrive as JSON numbers
		if v == float64(int64(v)) {
			return fmt.Sprint(int64(v)), nil
		}
		return fmt.Sprint(v), nil
	case nil:
		return "", nil
	}
	return "", errors.New("value must be a string, number, boolean or a list of them")
}

// ApplyFile sets every flag of fs that is not in set from values (keyed by
// flag name). A key that names no flag, or names one of the flags in
// forbidden, is an error, as is an invalid value.
func ApplyFile(fs *flag.FlagSet, path string, values map[string]string, set map[string]bool, forbidden ...string) error {
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if fs.Lookup(k) == nil || slices.Contains(forbidden, k) {
			return fmt.Errorf("%s: unknown key %q", path, k)
		}
		if set[k] {
			continue
		}
		if err := fs.Set(k, values[k]); err != nil {
			return fmt.Errorf("%s: key %q: invalid value %q: %w", path, k, values[k], err)
		}
		set[k] = true
	}
	return nil
}
