package benchkit

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("Median odd = %v", got)
	}
	if got := Median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("Median even = %v", got)
	}
	if got := Median(nil); got != 0 {
		t.Errorf("Median empty = %v", got)
	}
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := Percentile(d, 0.5), Percentile(d, 0.99); p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("Percentile = %v, %v", p50, p99)
	}
	for x, want := range map[float64]string{1234.5: "1234", 12.34: "12.3", 1.234: "1.23"} {
		if got := Num(x); got != want {
			t.Errorf("Num(%v) = %q, want %q", x, got, want)
		}
	}
	if got := Order([]string{"a", "b"}, 1); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("Order odd = %v", got)
	}
	if got := Order([]string{"a", "b"}, 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Order even = %v", got)
	}
}

func TestTables(t *testing.T) {
	metrics := []Metric{{Key: "ops", Unit: "ops/s", Goal: "ratio>=0.9"}, {Key: "p99", Unit: "ms"}}
	rounds := []Round{
		{Round: 1, First: "ours", Results: map[string]Figures{"ours": {"ops": 1000, "p99": 1}, "theirs": {"ops": 2000, "p99": 2}}},
		{Round: 2, First: "theirs", Results: map[string]Figures{"ours": {"ops": 3000, "p99": 3}, "theirs": {"ops": 2000, "p99": 0}}},
	}
	names := []string{"ours", "theirs"}
	med, ratio, goals := Summarize(metrics, names, rounds)
	if g := goals["ops"]; g.Goal != "ops ours/theirs >=0.9" || !g.Met || g.Got != 1 {
		t.Errorf("goal = %+v", g)
	}
	if m, r, g := Summarize(metrics, names[:1], rounds); m["ours"]["ops"] != 2000 || r != nil || g != nil {
		t.Errorf("Summarize of one target = %v, %v, %v", m, r, g)
	}
	var b strings.Builder
	tb := &Table{Width: 6, Names: names, Metrics: metrics, Median: med, Ratio: ratio, Goals: goals, GoalTrim: "ratio"}
	PrintMedians(&b, tb)
	PrintRounds(&b, tb, rounds)
	// Right-aligned columns; the medians table has a trailing empty cell.
	want := "  metric   unit  ours  theirs  ours/theirs      goal\n" +
		"  ops     ops/s  2000    2000         1.00  >=0.9 ok\n" +
		"  p99        ms  2.00    1.00         2.00          \n" +
		"\nPer round (first to run: r1=ours, r2=theirs)\n\n" +
		"  metric  ours r1  ours r2  theirs r1  theirs r2\n" +
		"  ops        1000     3000       2000       2000\n" +
		"  p99        1.00     3.00       2.00       0.00\n"
	if got := b.String(); got != want {
		t.Errorf("tables:\n%s\nwant:\n%s", got, want)
	}
}
