package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"substrate/internal/rabbitmqtest"
)

// quorumStatusOut is `rabbitmq-queues quorum_status dbgq --formatter json`
// from a three-node RabbitMQ 3.10.8 cluster started by this bench.
const quorumStatusOut = `[
{"Node Name":"cbench6595n1@127.0.0.11","Raft State":"leader","Log Index":2,"Commit Index":2,"Snapshot Index":"undefined","Term":1,"Machine Version":2}
,{"Node Name":"cbench6595n3@127.0.0.13","Raft State":"follower","Log Index":2,"Commit Index":2,"Snapshot Index":"undefined","Term":1,"Machine Version":2}
,{"Node Name":"cbench6595n2@127.0.0.12","Raft State":"follower","Log Index":2,"Commit Index":2,"Snapshot Index":"undefined","Term":1,"Machine Version":2}
]
`

func TestParseQuorumStatus(t *testing.T) {
	st, err := parseQuorumStatus(quorumStatusOut)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != "cbench6595n1@127.0.0.11" || !slices.Equal(st.Online, []string{"cbench6595n1@127.0.0.11", "cbench6595n3@127.0.0.13", "cbench6595n2@127.0.0.12"}) {
		t.Errorf("parseQuorumStatus = %+v", st)
	}
	if _, err := parseQuorumStatus("Error: not a queue"); err == nil {
		t.Error("parseQuorumStatus of an error message: no error")
	}
}

func TestErlIP(t *testing.T) {
	if got := erlIP("127.0.0.12"); got != "{127,0,0,12}" {
		t.Errorf("erlIP = %q", got)
	}
}

// TestLogsSince: a slow failover's trace has the other nodes' lines from
// the kill on, none of the killed node's, none from before.
func TestLogsSince(t *testing.T) {
	kill := time.Date(2026, 12, 6, 17, 35, 12, 0, time.UTC)
	line := func(d time.Duration, msg string) string {
		return "time=" + kill.Add(d).Format(time.RFC3339Nano) + " level=INFO msg=" + msg + "\n"
	}
	sc := &substrateCluster{}
	for i, name := range []string{"ctl1", "ctl2", "ctl3"} {
		n := &substrateNode{idx: i, name: name, out: &rabbitmqtest.Tail{}}
		n.out.Write([]byte(line(-time.Second, "before") + "not a log line\n" + line(time.Millisecond, "after-"+name)))
		sc.nodes = append(sc.nodes, n)
	}
	got := sc.logsSince(kill, 0)
	want := []string{"ctl2: " + strings.TrimSuffix(line(time.Millisecond, "after-ctl2"), "\n"), "ctl3: " + strings.TrimSuffix(line(time.Millisecond, "after-ctl3"), "\n")}
	if !slices.Equal(got, want) {
		t.Fatalf("logsSince:\n%q\nwant\n%q", got, want)
	}
}
