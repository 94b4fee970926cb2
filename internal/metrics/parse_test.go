package metrics_test

import (
	dto "github.com/prometheus/client_model/go"

	"substrate/internal/metrics/promtest"
)

type dtoFamily = dto.MetricFamily

// The scrape helpers (internal/metrics/promtest).
var (
	parse      = promtest.Parse
	value      = promtest.Value
	sum        = promtest.Sum
	hasLabels  = promtest.HasLabels
	labelNames = promtest.LabelNames
)
