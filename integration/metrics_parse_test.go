package integration

import "substrate/internal/metrics/promtest"

// The scrape helpers the metrics tests use (internal/metrics/promtest).
var (
	parseProm      = promtest.Parse
	promValue      = promtest.Value
	promSum        = promtest.Sum
	promHasLabels  = promtest.HasLabels
	promLabelNames = promtest.LabelNames
)
