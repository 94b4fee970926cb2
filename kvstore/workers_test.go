package kvstore

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestGRPCStreamWorkers: the member's gRPC servers run requests on
// grpcStreamWorkers parked workers (grpc.NumStreamWorkers), not on a
// fresh goroutine each.
func TestGRPCStreamWorkers(t *testing.T) {
	// The workers of members that earlier tests shut down end
	// asynchronously: wait for them, so that what is counted is this
	// member's.
	const fn = "grpc.(*Server).serverWorker"
	for end := time.Now().Add(10 * time.Second); countGoroutines(fn) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d gRPC stream workers left by earlier tests", countGoroutines(fn))
		}
	}
	s := startMember(t, "workers", nil)
	// etcd builds its gRPC servers once ready, in goroutines of its own:
	// a request answered means they exist.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publicClient(t, s).Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got := countGoroutines(fn); got < grpcStreamWorkers {
		t.Errorf("%d gRPC stream workers, want at least %d (one set per gRPC server)", got, grpcStreamWorkers)
	}
}

func countGoroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}
