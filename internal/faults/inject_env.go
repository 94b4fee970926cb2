//go:build faultinject

package faults

import (
	"fmt"
	"os"
)

// A binary built with -tags faultinject arms the sites named in
// SUBSTRATE_TEST_FAULTS, for tests that drive bin/substrate.
func init() {
	if spec := os.Getenv("SUBSTRATE_TEST_FAULTS"); spec != "" {
		if err := ArmSpec(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}
