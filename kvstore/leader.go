package kvstore

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// HandOffLeadership moves etcd's leadership away from this member when it
// leads: to the first other voting member that eligible accepts (by its
// etcd member name; nil: any) and that takes it within wait each. A substrate cluster calls it on the broker's leader (cmd/substrate,
// docs/cluster.md), so that losing that one node costs one election (the
// broker's), not two: the new broker leader reads its definitions from
// etcd and, had etcd's leader died too, would wait for etcd's own
// election (one to two seconds with etcd's default timing). It returns
// the new leader's member ID, or 0 when this member did not lead (or none
// took the leadership).
func (s *Store) HandOffLeadership(ctx context.Context, wait time.Duration, eligible func(name string) bool) (uint64, error) {
	srv := s.reserved.srv.Load()
	if srv == nil {
		return 0, ErrStatusUnavailable
	}
	select {
	case <-srv.StopNotify():
		return 0, ErrStatusUnavailable
	default:
	}
	self := uint64(srv.MemberID())
	if srv.Lead() != self {
		return 0, nil
	}
	var last error
	for _, m := range srv.Cluster().Members() {
		id := uint64(m.ID)
		if id == self || m.IsLearner || (eligible != nil && !eligible(m.Name)) {
			continue
		}
		c, cancel := context.WithTimeout(ctx, wait)
		err := srv.MoveLeader(c, self, id)
		cancel()
		if err == nil {
			return id, nil
		}
		last = err
		if ctx.Err() != nil || srv.Lead() != self {
			break
		}
	}
	return 0, last
}

// PeerTLSInfo returns the peer TLS settings of the running member, as
// etcd completed them when it started (auto TLS certificates, cipher
// suites, TLS versions: embed works on its own copy of the
// configuration). It fails before Start.
func (s *Store) PeerTLSInfo() (transport.TLSInfo, error) {
	if s.etcd == nil {
		return transport.TLSInfo{}, errors.New("kvstore: etcd member not started")
	}
	return s.etcd.Config().PeerTLSInfo, nil
}
