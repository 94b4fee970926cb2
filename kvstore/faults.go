package kvstore

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"substrate/internal/faults"
)

// SiteRequest is the fault-injection site of an etcd client request
// (internal/faults); subject: the gRPC method and, for requests with a
// key (Range, Put, DeleteRange...), the key: "/etcdserverpb.KV/Put mykey".
const SiteRequest = "etcd.request"

// recoverOptions make etcd's gRPC server (and the JSON gateway, which
// calls it) recover a panic in a request's handler: grpc-go does not, so
// one bad request would end the process. The client gets codes.Internal;
// the panic is logged once with the peer and counted for "etcd". Panics
// in etcd's own goroutines (the Raft and apply loops) are not requests:
// etcd logs them as fatal, and serve's emergency stop runs first.
func recoverOptions(log *slog.Logger) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer recoverRequest(ctx, log, info.FullMethod, &err)
			if faults.Armed() != nil {
				subject := info.FullMethod
				if k, ok := req.(interface{ GetKey() []byte }); ok {
					subject += " " + string(k.GetKey())
				}
				faults.Point(SiteRequest, subject)
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
			defer recoverRequest(ss.Context(), log, info.FullMethod, &err)
			faults.Point(SiteRequest, info.FullMethod)
			return h(srv, ss)
		}),
	}
}

// recoverRequest must be deferred directly.
func recoverRequest(ctx context.Context, log *slog.Logger, method string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	who := "etcd client"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		who = p.Addr.String()
	}
	faults.Handle(log, faults.Etcd, who+" "+method, v, nil)
	*err = status.Error(codes.Internal, "substrate: internal error (panic) serving "+method)
}
