package kvstore

import (
	"errors"
	"strconv"

	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/storage"
)

// Status is what `etcdctl endpoint status` and `member list` show of the
// member and its cluster, read in process (the web UI's etcd panel).
type Status struct {
	ID, Leader     uint64 // this member's ID; the leader's (0: none known)
	ClusterID      uint64 // the etcd cluster's ID
	Term           uint64 // the raft term
	DBSize         int64  // bytes of the backend file
	DBSizeInUse    int64  // bytes of it in use
	DBQuota        int64  // the backend quota (--quota-backend-bytes; etcd's default when unset)
	IsLearner      bool   // this member is a learner
	Members        []Member
	Alarms         []string // active alarms of the cluster: "NOSPACE on 8e9e05c52164694d"
	Version        string   // etcd's server version
	ClusterVersion string   // "" until the cluster has decided one
}

// Member is one member of the cluster.
type Member struct {
	ID         uint64
	Name       string // "" for a member added but not started
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// ErrStatusUnavailable is Status's error before Start or after Shutdown.
var ErrStatusUnavailable = errors.New("kvstore: etcd member not running")

// Status reads the member's state; it fails before Start and once the
// member has stopped.
func (s *Store) Status() (Status, error) {
	srv := s.reserved.srv.Load()
	if srv == nil {
		return Status{}, ErrStatusUnavailable
	}
	select {
	case <-srv.StopNotify():
		return Status{}, ErrStatusUnavailable
	default:
	}
	st := Status{
		ID:        uint64(srv.MemberID()),
		ClusterID: uint64(srv.Cluster().ID()),
		Leader:    uint64(srv.Leader()),
		Term:      srv.Term(),
		IsLearner: srv.IsLearner(),
		Version:   version.Version,
		DBQuota:   s.ec.QuotaBackendBytes,
	}
	if st.DBQuota <= 0 {
		st.DBQuota = storage.DefaultQuotaBytes
	}
	if v := srv.ClusterVersion(); v != nil {
		st.ClusterVersion = v.String()
	}
	if be := srv.Backend(); be != nil {
		st.DBSize, st.DBSizeInUse = be.Size(), be.SizeInUse()
	}
	for _, m := range srv.Cluster().Members() {
		st.Members = append(st.Members, Member{ID: uint64(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	for _, a := range srv.Alarms() {
		st.Alarms = append(st.Alarms, a.Alarm.String()+" on "+strconv.FormatUint(a.MemberID, 16))
	}
	return st, nil
}
