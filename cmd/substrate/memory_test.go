package main

import "testing"

func TestParseWatermark(t *testing.T) {
	var total uint64 = 8 << 30
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"0.4", uint64(0.4 * float64(total))}, {"0", 0}, {"0.0", 0}, {"1.0", total},
		{"1073741824", 1 << 30}, {"512MiB", 512 << 20}, {"2GB", 2e9}, {"100MB", 1e8},
		{"64M", 64 << 20}, {"1G", 1 << 30}, {"10KiB", 10 << 10},
	} {
		got, err := parseWatermark(c.in, total)
		if err != nil || got != c.want {
			t.Errorf("parseWatermark(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "1.5", "-0.1", "abc", "12XB", "0.4GB", "-5", "99999999999999999999G"} {
		if _, err := parseWatermark(bad, total); err == nil {
			t.Errorf("parseWatermark(%q) accepted", bad)
		}
	}
	if totalMemory() == 0 {
		t.Error("totalMemory found nothing in /proc/meminfo")
	}
}
