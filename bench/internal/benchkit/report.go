package benchkit

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Metric describes one reported figure.
type Metric struct {
	Key  string
	Unit string // e.g. "ops/s" (higher is better), "ms" or "MiB" (lower is better)
	Goal string // goal checked against the medians, if any, e.g. "ratio>=1.0"
}

// Figures holds one target's metrics in one round (metric key -> value),
// plus whatever extra counts a benchmark records.
type Figures map[string]float64

// GoalStat is one checked goal.
type GoalStat struct {
	Goal string  `json:"goal"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

// Round is one round's figures, for the report tables.
type Round struct {
	Round   int                `json:"round"`
	First   string             `json:"first"`   // target that ran first
	Results map[string]Figures `json:"results"` // target name -> figures
}

// Medians returns, per target name, the median over rounds of each metric.
func Medians(metrics []Metric, names []string, rounds []Round) map[string]Figures {
	med := map[string]Figures{}
	for _, name := range names {
		m := Figures{}
		for _, mt := range metrics {
			var xs []float64
			for _, rd := range rounds {
				xs = append(xs, rd.Results[name][mt.Key])
			}
			m[mt.Key] = Median(xs)
		}
		med[name] = m
	}
	return med
}

// Ratios returns ours/theirs for every metric where theirs is nonzero.
func Ratios(metrics []Metric, ours, theirs Figures) map[string]float64 {
	ratio := map[string]float64{}
	for _, mt := range metrics {
		if theirs[mt.Key] != 0 {
			ratio[mt.Key] = ours[mt.Key] / theirs[mt.Key]
		}
	}
	return ratio
}

// RatioGoals checks the metrics' "ratio>=X" and "ratio<=X" goals against
// ratio; label ("substrate/memcached") names the ratio in GoalStat.Goal.
// Metrics without a ratio are skipped.
func RatioGoals(metrics []Metric, ratio map[string]float64, label string) map[string]GoalStat {
	goals := map[string]GoalStat{}
	for _, mt := range metrics {
		r, ok := ratio[mt.Key]
		if !ok {
			continue
		}
		var limit float64
		switch {
		case mt.Goal == "":
		case strings.HasPrefix(mt.Goal, "ratio>="):
			fmt.Sscan(strings.TrimPrefix(mt.Goal, "ratio>="), &limit)
			goals[mt.Key] = GoalStat{Goal: mt.Key + " " + label + " " + mt.Goal[5:], Got: r, Met: r >= limit}
		case strings.HasPrefix(mt.Goal, "ratio<="):
			fmt.Sscan(strings.TrimPrefix(mt.Goal, "ratio<="), &limit)
			goals[mt.Key] = GoalStat{Goal: mt.Key + " " + label + " " + mt.Goal[5:], Got: r, Met: r <= limit}
		}
	}
	return goals
}

// Summarize returns the medians of every target and, when there are two,
// the ratios names[0]/names[1] of the medians and the metrics' ratio goals
// (RatioGoals); with one target ratio and goals are nil.
func Summarize(metrics []Metric, names []string, rounds []Round) (median map[string]Figures, ratio map[string]float64, goals map[string]GoalStat) {
	median = Medians(metrics, names, rounds)
	if len(names) < 2 {
		return median, nil, nil
	}
	ratio = Ratios(metrics, median[names[0]], median[names[1]])
	return median, ratio, RatioGoals(metrics, ratio, names[0]+"/"+names[1])
}

// Table is what PrintMedians and PrintRounds print.
type Table struct {
	Width   int      // width of the metric column
	Names   []string // targets: ours, then theirs if it was measured
	Metrics []Metric
	Median  map[string]Figures
	Ratio   map[string]float64
	Goals   map[string]GoalStat
	// GoalTrim is cut from the front of Metric.Goal in the goal column
	// ("ratio" shows ">=0.9 ok").
	GoalTrim string
	// GoalAlone keeps the goal column when only our target was measured.
	GoalAlone bool
}

// PrintMedians prints the medians table: metric, unit, one column per
// target, and with two targets ours/theirs and the goal.
func PrintMedians(w io.Writer, t *Table) {
	both := len(t.Names) == 2
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	switch {
	case both:
		fmt.Fprintf(tw, "%-*s\tunit\t%s\t%s\t%s/%s\tgoal\t\n", t.Width, "metric", t.Names[0], t.Names[1], t.Names[0], t.Names[1])
	case t.GoalAlone:
		fmt.Fprintf(tw, "%-*s\tunit\t%s\tgoal\t\n", t.Width, "metric", t.Names[0])
	default:
		fmt.Fprintf(tw, "%-*s\tunit\t%s\t\n", t.Width, "metric", t.Names[0])
	}
	for _, mt := range t.Metrics {
		ours := t.Median[t.Names[0]][mt.Key]
		goal := ""
		if g, ok := t.Goals[mt.Key]; ok {
			goal = strings.TrimPrefix(mt.Goal, t.GoalTrim) + map[bool]string{true: " ok", false: " MISS"}[g.Met]
		}
		switch {
		case both:
			ratio := "-"
			if r, ok := t.Ratio[mt.Key]; ok {
				ratio = fmt.Sprintf("%.2f", r)
			}
			fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t\n", t.Width, mt.Key, mt.Unit, Num(ours), Num(t.Median[t.Names[1]][mt.Key]), ratio, goal)
		case t.GoalAlone:
			fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t\n", t.Width, mt.Key, mt.Unit, Num(ours), goal)
		default:
			fmt.Fprintf(tw, "%-*s\t%s\t%s\t\n", t.Width, mt.Key, mt.Unit, Num(ours))
		}
	}
	tw.Flush()
}

// PrintRounds prints the per-round figures, so that the spread is visible:
// which target ran first in each round, then one column per target and round.
func PrintRounds(w io.Writer, t *Table, rounds []Round) {
	fmt.Fprintf(w, "\nPer round (first to run: ")
	for i, rd := range rounds {
		fmt.Fprintf(w, "%sr%d=%s", map[bool]string{true: ", ", false: ""}[i > 0], rd.Round, rd.First)
	}
	fmt.Fprintf(w, ")\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := fmt.Sprintf("%-*s\t", t.Width, "metric")
	for _, name := range t.Names {
		for _, rd := range rounds {
			hdr += fmt.Sprintf("%s r%d\t", name, rd.Round)
		}
	}
	fmt.Fprintln(tw, hdr)
	for _, mt := range t.Metrics {
		line := fmt.Sprintf("%-*s\t", t.Width, mt.Key)
		for _, name := range t.Names {
			for _, rd := range rounds {
				line += Num(rd.Results[name][mt.Key]) + "\t"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}
