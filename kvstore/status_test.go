package kvstore

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestStatus: before Start and after Shutdown Status fails; a running
// single member is its own leader, named as configured, with its peer URL,
// a database that grows with writes and the configured quota.
func TestStatus(t *testing.T) {
	s := startMember(t, "ui", map[string]string{"ETCD_QUOTA_BACKEND_BYTES": strconv.Itoa(64 << 20)})
	st, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.ID == 0 || st.Leader != st.ID || st.Term == 0 || st.IsLearner {
		t.Errorf("status %+v: want a non-learner leading itself", st)
	}
	if len(st.Members) != 1 || st.Members[0].Name != "ui" || st.Members[0].ID != st.ID || len(st.Members[0].PeerURLs) != 1 {
		t.Errorf("members %+v", st.Members)
	}
	if st.DBQuota != 64<<20 || st.DBSize <= 0 || st.DBSizeInUse <= 0 || st.DBSizeInUse > st.DBSize || st.Version == "" || len(st.Alarms) != 0 {
		t.Errorf("status %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(); !errors.Is(err, ErrStatusUnavailable) {
		t.Errorf("Status after Shutdown: %v", err)
	}
	fresh, err := New(NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Status(); !errors.Is(err, ErrStatusUnavailable) {
		t.Errorf("Status before Start: %v", err)
	}
}
