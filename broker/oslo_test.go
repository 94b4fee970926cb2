package broker

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestOsloScenario runs the oslo.messaging scenario that captured
// RabbitMQ's behaviour (/work/shared/reference/amqp/scenario.py: call,
// cast, fanout, exception, call-monitor, mandatory reply, notifications)
// against this broker with Debian's python3-oslo.messaging. It takes about
// 10 s, so it runs only with SUBSTRATE_TEST_OSLO=1.
func TestOsloScenario(t *testing.T) {
	script := "/work/shared/reference/amqp/scenario.py"
	if os.Getenv("SUBSTRATE_TEST_OSLO") == "" {
		t.Skip("set SUBSTRATE_TEST_OSLO=1 to run")
	}
	if _, err := os.Stat(script); err != nil {
		t.Skip(err)
	}
	if exec.Command("/usr/bin/python3", "-c", "import oslo_messaging").Run() != nil {
		t.Skip("python3-oslo.messaging not installed")
	}
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", script, "rabbit://guest:guest@"+addrOf(s)+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"call -> 42", "call srv -> s", "boom -> ValueError", "cm -> 3",
		"mandatory -> MessageUndeliverable", "{'a': 1}", "{'a': 2}", "casts seen [1, 2]",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
