package kvstore

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ReservedPrefix is the key prefix no client of the public client port can
// read, watch, write, delete or compare: the broker's definitions (users
// with their password hashes, vhosts, permissions, durable entities) live
// under it, and only this process reaches them, through Store.KV.
const ReservedPrefix = "/substrate/broker/"

// ErrReserved is what a public client gets for a request that would touch
// ReservedPrefix: the error etcd's own auth returns, so that clientv3 and
// etcdctl say "etcdserver: permission denied".
var ErrReserved = rpctypes.ErrGRPCPermissionDenied

// errSnapshotRefused: a snapshot holds every key, the reserved ones too.
var errSnapshotRefused = status.Error(codes.PermissionDenied,
	"etcdserver: permission denied: a snapshot holds the broker's definitions; enable etcd auth to take snapshots as root")

// reserved hides keys under one prefix from the public gRPC server (and so
// from the JSON gateway, which calls it). Reads are clipped: a key under
// the prefix is absent from ranges and watches, and counts leave it out.
// Writes, deletes and transactions that would touch it are refused.
type reserved struct {
	prefix, end []byte // [prefix, end) is the reserved range
	log         *slog.Logger
	// srv is set once the member has started (snapshots are allowed
	// only when etcd auth is on, so that etcd asks for root).
	srv atomic.Pointer[etcdserver.EtcdServer]
	// kvs serves the ranges of RangeStream that meet the reserved keys.
	kvs atomic.Pointer[pb.KVServer]
}

// started gives the filter the member it guards.
func (r *reserved) started(srv *etcdserver.EtcdServer) {
	kvs := v3rpc.NewKVServer(srv)
	r.kvs.Store(&kvs)
	r.srv.Store(srv)
}

func newReserved(prefix string, log *slog.Logger) *reserved {
	p := []byte(prefix)
	return &reserved{prefix: p, end: prefixEnd(p), log: log}
}

// prefixEnd is the end of the range of keys starting with p (clientv3's
// GetPrefixRangeEnd).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0} // every key
}

// overlaps reports whether etcd's range [key, rangeEnd) meets the
// reserved range. An empty rangeEnd is the single key; "\x00" is every
// key from key on.
func (r *reserved) overlaps(key, rangeEnd []byte) bool {
	switch {
	case len(rangeEnd) == 0:
		return bytes.HasPrefix(key, r.prefix)
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return bytes.Compare(key, r.end) < 0
	default:
		return bytes.Compare(key, r.end) < 0 && bytes.Compare(rangeEnd, r.prefix) > 0 && bytes.Compare(key, rangeEnd) < 0
	}
}

// intersection is the part of [key, rangeEnd) inside the reserved range,
// for overlapping ranges.
func (r *reserved) intersection(key, rangeEnd []byte) (lo, hi []byte) {
	if len(rangeEnd) == 0 {
		return key, nil
	}
	lo, hi = key, r.end
	if bytes.Compare(lo, r.prefix) < 0 {
		lo = r.prefix
	}
	if !(len(rangeEnd) == 1 && rangeEnd[0] == 0) && bytes.Compare(rangeEnd, hi) < 0 {
		hi = rangeEnd
	}
	return lo, hi
}

func (r *reserved) isReserved(key []byte) bool { return bytes.HasPrefix(key, r.prefix) }

// group is the range of keys etcd's lock and election services create
// under name: name/LEASE.
func (r *reserved) group(name []byte) bool {
	p := append(bytes.Clone(name), '/')
	return r.overlaps(p, prefixEnd(p))
}

// touchesTxn reports whether a transaction compares or operates on a
// reserved key, at any depth.
func (r *reserved) touchesTxn(t *pb.TxnRequest) bool {
	if t == nil {
		return false
	}
	for _, c := range t.Compare {
		if r.overlaps(c.Key, c.RangeEnd) {
			return true
		}
	}
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			switch {
			case op.GetRequestRange() != nil:
				if rr := op.GetRequestRange(); r.overlaps(rr.Key, rr.RangeEnd) {
					return true
				}
			case op.GetRequestPut() != nil:
				if r.isReserved(op.GetRequestPut().Key) {
					return true
				}
			case op.GetRequestDeleteRange() != nil:
				if dr := op.GetRequestDeleteRange(); r.overlaps(dr.Key, dr.RangeEnd) {
					return true
				}
			case op.GetRequestTxn() != nil:
				if r.touchesTxn(op.GetRequestTxn()) {
					return true
				}
			}
		}
	}
	return false
}

// refused reports whether a unary request is one the public port refuses
// outright. Range is not: it is clipped.
func (r *reserved) refused(req any) bool {
	switch q := req.(type) {
	case *pb.PutRequest:
		return r.isReserved(q.Key)
	case *pb.DeleteRangeRequest:
		// Refused rather than clipped: a delete that spans the broker's
		// keys is refused whole, as etcd's auth refuses a delete over a
		// range the user may not write, so nothing is half done.
		return r.overlaps(q.Key, q.RangeEnd)
	case *pb.TxnRequest:
		return r.touchesTxn(q)
	case *v3lockpb.LockRequest:
		return r.group(q.Name)
	case *v3lockpb.UnlockRequest:
		return r.isReserved(q.Key)
	case *v3electionpb.CampaignRequest:
		return r.group(q.Name)
	case *v3electionpb.LeaderRequest:
		return r.group(q.Name)
	case *v3electionpb.ProclaimRequest:
		return q.Leader != nil && (r.group(q.Leader.Name) || r.isReserved(q.Leader.Key))
	case *v3electionpb.ResignRequest:
		return q.Leader != nil && (r.group(q.Leader.Name) || r.isReserved(q.Leader.Key))
	}
	return false
}

func (r *reserved) deny(ctx context.Context, method string) {
	who := "etcd client"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		who = p.Addr.String()
	}
	r.log.Debug("refused a request on the broker's reserved keys", "peer", who, "method", method)
}

func (r *reserved) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if rr, ok := req.(*pb.RangeRequest); ok {
		if !r.overlaps(rr.Key, rr.RangeEnd) {
			return h(ctx, req)
		}
		return r.clipRange(ctx, rr, h)
	}
	if r.refused(req) {
		r.deny(ctx, info.FullMethod)
		return nil, ErrReserved
	}
	return h(ctx, req)
}

// clipAttempts bounds the retries of a limited range whose reserved keys
// changed under it (the broker wrote meanwhile).
const clipAttempts = 5

// clipRange serves a range that meets the reserved keys as etcd would if
// they did not exist: they are left out of the keys, the count and the
// "more" flag, at the revision the range was read at.
//
// With a limit, the range asks for limit+n keys, n being the reserved keys
// it may meet, so that after leaving them out it still has limit keys if
// there are that many. The header's revision is the one etcd read at, as
// for any range: the count of reserved keys is taken at that revision.
func (r *reserved) clipRange(ctx context.Context, req *pb.RangeRequest, h grpc.UnaryHandler) (any, error) {
	lo, hi := r.intersection(req.Key, req.RangeEnd)
	count := func(rev int64, serializable bool) (int64, int64, error) {
		resp, err := h(ctx, &pb.RangeRequest{Key: lo, RangeEnd: hi, Revision: rev, CountOnly: true, Serializable: serializable})
		if err != nil {
			return 0, 0, err
		}
		rr := resp.(*pb.RangeResponse)
		return rr.Count, rr.Header.GetRevision(), nil
	}
	var guess int64
	for attempt := 1; ; attempt++ {
		q := proto.Clone(req).(*pb.RangeRequest)
		if req.Limit > 0 {
			n, _, err := count(req.Revision, req.Serializable)
			if err != nil {
				return nil, err
			}
			guess = n
			q.Limit = req.Limit + guess
		}
		resp, err := h(ctx, q)
		if err != nil {
			return nil, err
		}
		rr := resp.(*pb.RangeResponse)
		at := req.Revision
		if at == 0 {
			at = rr.Header.GetRevision()
		}
		// Serializable: this member has just served revision at.
		n, _, err := count(at, true)
		if err != nil {
			return nil, err
		}
		if req.Limit > 0 && rr.More && n > guess && attempt < clipAttempts {
			continue // more reserved keys than asked room for: ask again
		}
		out := rr // fresh from the handler: ours to change
		kvs := rr.Kvs
		out.Kvs = make([]*mvccpb.KeyValue, 0, len(kvs))
		for _, kv := range kvs {
			if !r.isReserved(kv.Key) {
				out.Kvs = append(out.Kvs, kv)
			}
		}
		more := rr.More
		out.Count = max(rr.Count-n, 0)
		if req.Limit > 0 {
			out.More = int64(len(out.Kvs)) > req.Limit || more
			if int64(len(out.Kvs)) > req.Limit {
				out.Kvs = out.Kvs[:req.Limit]
			}
		}
		if len(out.Kvs) == 0 {
			out.Kvs = nil
		}
		return out, nil
	}
}

func (r *reserved) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	switch info.FullMethod {
	case "/etcdserverpb.Maintenance/Snapshot":
		if s := r.srv.Load(); s == nil || !s.AuthStore().IsAuthEnabled() {
			r.deny(ss.Context(), info.FullMethod)
			return errSnapshotRefused
		}
	case "/etcdserverpb.KV/RangeStream":
		return r.rangeStream(srv, ss, h)
	}
	return h(srv, &filteredStream{ServerStream: ss, r: r, method: info.FullMethod})
}

// rangeStream serves a RangeStream that meets the reserved keys as one
// chunk holding the clipped range (the merge of a stream's chunks is the
// Range response, so a client cannot tell); any other goes to etcd.
func (r *reserved) rangeStream(srv any, ss grpc.ServerStream, h grpc.StreamHandler) error {
	req := new(pb.RangeRequest)
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	kvs := r.kvs.Load()
	if !r.overlaps(req.Key, req.RangeEnd) || kvs == nil {
		return h(srv, &replayStream{ServerStream: ss, req: req})
	}
	// What etcd's RangeStream refuses, refused alike.
	if !txn.IsDefaultOrdering(req.SortTarget, req.SortOrder) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if txn.HasRevisionFilters(req) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	rangeOnce := func(ctx context.Context, q any) (any, error) { return (*kvs).Range(ctx, q.(*pb.RangeRequest)) }
	resp, err := r.clipRange(ss.Context(), req, rangeOnce)
	if err != nil {
		return err
	}
	return ss.SendMsg(&pb.RangeStreamResponse{RangeResponse: resp.(*pb.RangeResponse)})
}

// replayStream hands the handler the request the interceptor already read.
type replayStream struct {
	grpc.ServerStream
	req *pb.RangeRequest
}

func (s *replayStream) RecvMsg(m any) error {
	if s.req == nil {
		return s.ServerStream.RecvMsg(m)
	}
	q, ok := m.(*pb.RangeRequest)
	if !ok {
		return status.Errorf(codes.Internal, "kvstore: unexpected message %T", m)
	}
	proto.Merge(q, s.req)
	s.req = nil
	return nil
}

// filteredStream leaves reserved keys out of watch events and refuses an
// election observer on a reserved name.
type filteredStream struct {
	grpc.ServerStream
	r      *reserved
	method string
	// open: watch IDs whose last sent response was a fragment
	// (fragmented watch responses end with one that is not).
	open map[int64]bool
}

func (f *filteredStream) RecvMsg(m any) error {
	if err := f.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if q, ok := m.(*v3electionpb.LeaderRequest); ok && f.r.group(q.Name) {
		f.r.deny(f.Context(), f.method)
		return ErrReserved
	}
	return nil
}

func (f *filteredStream) SendMsg(m any) error {
	wr, ok := m.(*pb.WatchResponse)
	if !ok || len(wr.Events) == 0 {
		return f.ServerStream.SendMsg(m)
	}
	kept := make([]*mvccpb.Event, 0, len(wr.Events))
	for _, ev := range wr.Events {
		if ev.Kv == nil || !f.r.isReserved(ev.Kv.Key) {
			kept = append(kept, ev)
		}
	}
	if len(kept) == len(wr.Events) {
		return f.send(wr)
	}
	if len(kept) == 0 && !f.open[wr.WatchId] {
		// Nothing left to say: a response with no events would read
		// as a progress notification.
		return nil
	}
	out := proto.Clone(wr).(*pb.WatchResponse)
	out.Events = kept
	return f.send(out)
}

func (f *filteredStream) send(wr *pb.WatchResponse) error {
	if wr.Fragment {
		if f.open == nil {
			f.open = make(map[int64]bool)
		}
		f.open[wr.WatchId] = true
	} else {
		delete(f.open, wr.WatchId)
	}
	return f.ServerStream.SendMsg(wr)
}

// options are the interceptors that apply the filter to the public gRPC
// server.
func (r *reserved) options() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(r.unary), grpc.ChainStreamInterceptor(r.stream)}
}
