package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"substrate/internal/config"
	"substrate/internal/ctl"
)

// ctlCommand runs `substrate ctl ...` (also installed as rabbitmqctl):
// rabbitmqctl's commands against the broker of the `substrate serve` whose
// data directory is --data-dir, SUBSTRATE_DATA_DIR, the config file's
// data-dir, or ./substrate-data, in that order.
func ctlCommand(args []string, stdout, stderr io.Writer) error {
	dataDir, cfgFile := "", os.Getenv("SUBSTRATE_CONFIG")
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "data-dir" && name != "config") {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usageError{fmt.Errorf("--%s needs a value", name)}
			}
			i++
			val = args[i]
		}
		if name == "data-dir" {
			dataDir = val
		} else {
			cfgFile = val
		}
	}
	if dataDir == "" {
		dataDir = os.Getenv("SUBSTRATE_DATA_DIR")
	}
	if dataDir == "" && cfgFile != "" {
		values, err := config.ReadFile(cfgFile)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		dataDir = values["data-dir"]
	}
	if dataDir == "" {
		dataDir = "substrate-data"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := ctl.Call(ctx, dataDir, rest)
	fmt.Fprint(stdout, res.Stdout)
	if res.Code != 0 {
		return exitError{strings.TrimSuffix(res.Stderr, "\n"), res.Code}
	}
	fmt.Fprint(stderr, res.Stderr)
	return nil
}
