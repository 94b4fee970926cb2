package main

import "substrate/bench/internal/benchkit"

// fail stops any server still running and exits.
func fail(msg string) {
	runCleanups()
	benchkit.Fail("amqpbench", msg)
}
