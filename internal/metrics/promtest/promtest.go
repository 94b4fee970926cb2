// Package promtest reads a Prometheus scrape in tests, with Prometheus's
// own text parser, and picks samples out of it.
package promtest

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse reads a scrape as Prometheus would (a malformed exposition fails
// the test).
func Parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// Value is a sample's value, whatever the family's type.
func Value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// Sum adds up the samples of a family whose labels include want (pairs
// name, value).
func Sum(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	var total float64
	f := fams[name]
	if f == nil {
		return 0
	}
	for _, m := range f.Metric {
		if HasLabels(m, want...) {
			total += Value(m)
		}
	}
	return total
}

// HasLabels says whether a sample carries every label of want (pairs
// name, value).
func HasLabels(m *dto.Metric, want ...string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.Label {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// LabelNames are the label names of a family's first sample.
func LabelNames(f *dto.MetricFamily) []string {
	if len(f.Metric) == 0 {
		return nil
	}
	var out []string
	for _, l := range f.Metric[0].Label {
		out = append(out, l.GetName())
	}
	return out
}
