// Package benchkit holds what the benchmark programs in bench/ (kvbench,
// cachebench, amqpbench) share: statistics and number formatting, the
// -quick flag and round-order scaffolding, starting and stopping a server
// process (SIGTERM, then SIGKILL) and reading its memory from /proc, free
// loopback ports, and printing the report tables (medians with
// unit/ours/theirs/ratio/goal columns, then the per-round figures).
package benchkit

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"
)

// Ms converts d to (fractional) milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MiB converts b bytes to MiB.
func MiB(b int64) float64 { return float64(b) / (1 << 20) }

// Median of xs (mean of the two middle values for even length); 0 if empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Percentile returns the q-quantile (0..1) of sorted samples (nearest rank).
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Num formats a figure with precision suited to its size.
func Num(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.2f", x)
	}
}

// IsExecutable reports whether p is a regular file with an execute bit.
func IsExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Fail prints "prog: msg" to stderr and exits with status 1.
func Fail(prog, msg string) {
	fmt.Fprintln(os.Stderr, prog+": "+msg)
	os.Exit(1)
}

// Common holds the flags every benchmark has.
type Common struct {
	Substrate string        // -substrate: path to the substrate binary
	Rounds    int           // -rounds
	Duration  time.Duration // -duration: measured duration of each load
	Quick     bool          // -quick: 1 round of quickDur loads
	JSON      string        // -json: also write the results as JSON here

	quickDur time.Duration
}

// CommonFlags registers -substrate, -rounds, -duration (help: "measured
// duration of " + durOf), -quick (1 round of quickDur loads) and -json on
// the default flag set.
func CommonFlags(durOf string, quickDur time.Duration) *Common {
	c := &Common{quickDur: quickDur}
	flag.StringVar(&c.Substrate, "substrate", "bin/substrate", "path to the substrate binary")
	flag.IntVar(&c.Rounds, "rounds", 3, "rounds; each runs both targets, alternating which goes first")
	flag.DurationVar(&c.Duration, "duration", 5*time.Second, "measured duration of "+durOf)
	flag.BoolVar(&c.Quick, "quick", false, fmt.Sprintf("smoke test: 1 round of %v loads (unless -rounds/-duration are given)", quickDur))
	flag.StringVar(&c.JSON, "json", "", "also write the results as JSON to this file")
	return c
}

// Parse parses the command line and applies -quick: 1 round of quickDur
// loads, unless -rounds or -duration were given.
func (c *Common) Parse() {
	flag.Parse()
	if !c.Quick {
		return
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rounds"] {
		c.Rounds = 1
	}
	if !set["duration"] {
		c.Duration = c.quickDur
	}
}

// Order returns the targets in the order to run them in round r (0-based):
// as given in even rounds, reversed in odd ones, so that each goes first
// equally often.
func Order[T any](targets []T, r int) []T {
	order := slices.Clone(targets)
	if r%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// WriteJSON writes v, indented, to path and prints "wrote PATH".
func WriteJSON(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s\n", path)
	return nil
}
