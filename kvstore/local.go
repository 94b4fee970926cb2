package kvstore

import (
	"context"
	"errors"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ErrNotStarted is returned by Store.KV's calls before the member has
// started.
var ErrNotStarted = errors.New("kvstore: etcd member not started")

// KV is this process's own way into the member: etcd's KV API called in
// process (the adapters v3client uses), never through the client port, so
// neither the reserved-prefix filter nor TLS nor the network is in its
// way. When etcd auth is on, it acts as root (see doc.go). It may be
// taken before Start; its calls fail with ErrNotStarted until then.
func (s *Store) KV() clientv3.KV { return lazyKV{s} }

type lazyKV struct{ s *Store }

func (l lazyKV) kv() (clientv3.KV, error) {
	if kv := l.s.local.Load(); kv != nil {
		return *kv, nil
	}
	return nil, ErrNotStarted
}

func (l lazyKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	kv, err := l.kv()
	if err != nil {
		return nil, err
	}
	return kv.Put(ctx, key, val, opts...)
}

func (l lazyKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	kv, err := l.kv()
	if err != nil {
		return nil, err
	}
	return kv.Get(ctx, key, opts...)
}

func (l lazyKV) GetStream(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	kv, err := l.kv()
	if err != nil {
		return nil, err
	}
	return kv.GetStream(ctx, key, opts...)
}

func (l lazyKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	kv, err := l.kv()
	if err != nil {
		return nil, err
	}
	return kv.Delete(ctx, key, opts...)
}

func (l lazyKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	kv, err := l.kv()
	if err != nil {
		return nil, err
	}
	return kv.Compact(ctx, rev, opts...)
}

func (l lazyKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	kv, err := l.kv()
	if err != nil {
		return clientv3.OpResponse{}, err
	}
	return kv.Do(ctx, op)
}

func (l lazyKV) Txn(ctx context.Context) clientv3.Txn {
	kv, err := l.kv()
	if err != nil {
		return failedTxn{err}
	}
	return kv.Txn(ctx)
}

type failedTxn struct{ err error }

func (t failedTxn) If(...clientv3.Cmp) clientv3.Txn        { return t }
func (t failedTxn) Then(...clientv3.Op) clientv3.Txn       { return t }
func (t failedTxn) Else(...clientv3.Op) clientv3.Txn       { return t }
func (t failedTxn) Commit() (*clientv3.TxnResponse, error) { return nil, t.err }

// newLocalKV builds the in-process KV of a started member.
func newLocalKV(srv *etcdserver.EtcdServer) clientv3.KV {
	return clientv3.NewKVFromKVClient(&rootKV{
		kvc:  adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(srv)),
		auth: srv.AuthStore(),
	}, nil)
}

// rootAuth is the part of etcd's auth store rootKV needs.
type rootAuth interface {
	IsAuthEnabled() bool
	WithRoot(ctx context.Context) context.Context
}

// rootKV calls the member's KV server directly. With etcd auth on, each
// call carries a root token that etcd's auth store issued in this process
// (AuthStore.WithRoot, which etcd itself uses to revoke leases and answer
// /health): the token never leaves the process, and no password is
// stored. A token that etcd has expired or outdated (auth revision) is
// replaced once per call.
type rootKV struct {
	kvc  pb.KVClient
	auth rootAuth

	mu sync.Mutex
	md metadata.MD // the root token; nil: none yet
}

func (k *rootKV) ctx(ctx context.Context) context.Context {
	if !k.auth.IsAuthEnabled() {
		return ctx
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.md == nil {
		md, _ := metadata.FromIncomingContext(k.auth.WithRoot(context.Background()))
		k.md = md
	}
	return metadata.NewIncomingContext(ctx, k.md)
}

// stale reports an error that a fresh root token cures.
func (k *rootKV) stale(err error) bool {
	switch rpctypes.Error(err) {
	case rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision, rpctypes.ErrUserEmpty:
		k.mu.Lock()
		k.md = nil
		k.mu.Unlock()
		return true
	}
	return false
}

func call[Req, Resp any](k *rootKV, ctx context.Context, f func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	resp, err := f(k.ctx(ctx), req)
	if err != nil && k.stale(err) {
		resp, err = f(k.ctx(ctx), req)
	}
	return resp, err
}

func (k *rootKV) Range(ctx context.Context, in *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	return call(k, ctx, k.kvc.Range, in)
}

// RangeStream is not served in process (etcd's adapter does not either).
func (k *rootKV) RangeStream(ctx context.Context, in *pb.RangeRequest, opts ...grpc.CallOption) (pb.KV_RangeStreamClient, error) {
	return k.kvc.RangeStream(ctx, in, opts...)
}

func (k *rootKV) Put(ctx context.Context, in *pb.PutRequest, _ ...grpc.CallOption) (*pb.PutResponse, error) {
	return call(k, ctx, k.kvc.Put, in)
}

func (k *rootKV) DeleteRange(ctx context.Context, in *pb.DeleteRangeRequest, _ ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	return call(k, ctx, k.kvc.DeleteRange, in)
}

func (k *rootKV) Txn(ctx context.Context, in *pb.TxnRequest, _ ...grpc.CallOption) (*pb.TxnResponse, error) {
	return call(k, ctx, k.kvc.Txn, in)
}

func (k *rootKV) Compact(ctx context.Context, in *pb.CompactionRequest, _ ...grpc.CallOption) (*pb.CompactionResponse, error) {
	return call(k, ctx, k.kvc.Compact, in)
}
