package broker_test

import (
	"testing"

	"substrate/broker"
	"substrate/broker/definitionstest"
)

func TestMemDefinitions(t *testing.T) {
	definitionstest.Run(t, broker.NewMemDefinitions())
}
