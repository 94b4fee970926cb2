package main

import (
	"slices"
	"strings"
	"testing"
)

func TestPromValue(t *testing.T) {
	const text = `# HELP substrate_amqp_store_fsyncs_total fsyncs issued by the AMQP message store.
# TYPE substrate_amqp_store_fsyncs_total counter
substrate_amqp_store_fsyncs_total 1234
substrate_amqp_store_fsyncs_total_other 99
substrate_amqp_store_fsyncsX 7
other_metric{name="substrate_amqp_store_fsyncs_total"} 5
`
	if v, ok, err := promValue(strings.NewReader(text), fsyncMetric); err != nil || !ok || v != 1234 {
		t.Errorf("promValue = %v, %v, %v; want 1234, true, nil", v, ok, err)
	}
	labelled := `substrate_amqp_store_fsyncs_total{kind="segment",note="a } \" b"} 1e3 1700000000000
substrate_amqp_store_fsyncs_total{kind="dir"} 2.5
`
	if v, ok, err := promValue(strings.NewReader(labelled), fsyncMetric); err != nil || !ok || v != 1002.5 {
		t.Errorf("promValue labelled = %v, %v, %v; want 1002.5, true, nil", v, ok, err)
	}
	if _, ok, err := promValue(strings.NewReader("go_goroutines 12\n"), fsyncMetric); err != nil || ok {
		t.Errorf("promValue without the metric = %v, %v; want false, nil", ok, err)
	}
	for _, bad := range []string{`substrate_amqp_store_fsyncs_total{kind="x" 3`, "substrate_amqp_store_fsyncs_total abc", "substrate_amqp_store_fsyncs_total{} "} {
		if _, _, err := promValue(strings.NewReader(bad), fsyncMetric); err == nil {
			t.Errorf("promValue(%q): no error", bad)
		}
	}
}

func TestRabbitFsyncs(t *testing.T) {
	s, err := parseRabbitFsyncs("{-576460736123,4567}\n")
	if err != nil || s.count != 4567 || s.at != -576460736.123 {
		t.Errorf("parseRabbitFsyncs = %+v, %v", s, err)
	}
	if _, err := parseRabbitFsyncs("Error:\n{badarg,[{ets,lookup_element,...}]}"); err == nil {
		t.Error("parseRabbitFsyncs of an error: no error")
	}
	r, err := fsyncSample{count: 150, at: 12}.rateSince(fsyncSample{count: 50, at: 10})
	if err != nil || r != 50 {
		t.Errorf("rateSince = %v, %v; want 50", r, err)
	}
	if _, err := (fsyncSample{count: 1, at: 10}).rateSince(fsyncSample{count: 5, at: 9}); err == nil {
		t.Error("rateSince of a counter that went backwards: no error")
	}
	if _, err := (fsyncSample{count: 5, at: 10}).rateSince(fsyncSample{count: 1, at: 10}); err == nil {
		t.Error("rateSince over no time: no error")
	}
}

func TestLoads(t *testing.T) {
	for key, want := range map[string]string{"ready": "", "idle_rss": "", "conn_rss": "conn", "tp1": "tp", "tp4_pub": "tp",
		"rpc1_p99": "rpc", "rpc8_cpu": "rpc", "ptp1": "ptp", "ptp4_p99": "ptp"} {
		if got := metricLoad(key); got != want {
			t.Errorf("metricLoad(%q) = %q, want %q", key, got, want)
		}
	}
	loads, err := parseLoads(" ptp, backlog,")
	if err != nil || len(loads) != 2 || !loads["ptp"] || !loads["backlog"] {
		t.Errorf("parseLoads = %v, %v", loads, err)
	}
	if _, err := parseLoads("ptp,kafka"); err == nil || !strings.Contains(err.Error(), `"kafka"`) {
		t.Errorf("parseLoads with an unknown load: %v", err)
	}
	if _, err := parseLoads(","); err == nil {
		t.Error("parseLoads of nothing: no error")
	}
	var keys []string
	for _, m := range selectMetrics(slices.Concat(metrics, persistMetrics), map[string]bool{"ptp": true}) {
		keys = append(keys, m.Key)
	}
	if keys[0] != "ready" || keys[1] != "idle_rss" || keys[2] != "ptp1" || len(keys) != 2+len(persistMetrics) {
		t.Errorf("selectMetrics(ptp) = %v", keys)
	}
}

func TestBacklogRates(t *testing.T) {
	b := &backlogResult{Published: 1000, PubSecs: 2, Consumed: 1000, ConSecs: 0.5, IdleRSS: 100, PeakConRSS: 250}
	if b.pubRate() != 500 || b.conRate() != 2000 || b.peakRatio() != 2.5 {
		t.Errorf("rates = %v, %v, %v", b.pubRate(), b.conRate(), b.peakRatio())
	}
	if z := (&backlogResult{}); z.pubRate() != 0 || z.conRate() != 0 || z.peakRatio() != 0 {
		t.Error("zero backlogResult: nonzero rates")
	}
}
