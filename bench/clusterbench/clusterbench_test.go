package main

import (
	"slices"
	"testing"
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
