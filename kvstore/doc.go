// Package kvstore runs an etcd member inside the substrate process
// (go.etcd.io/etcd/server/v3/embed), so that etcdctl, tooz and etcd3gw talk
// to substrate as they would to the etcd daemon, and so that the broker can
// keep its definitions in the same Raft-replicated store.
//
// Besides etcd's own client port services, the JSON gateway also answers
// under /v3alpha/ (Debian's python3-etcd3gw 2.0.0 default), and nothing is
// served under /debug/: importing etcd registers pprof and expvar handlers
// that must not be reachable from the network.
//
// # The broker's keys
//
// The broker keeps users (with their password hashes), vhosts,
// permissions and durable entities under ReservedPrefix
// ("/substrate/broker/", where they always were: nothing to migrate).
// They stay in etcd's Raft, so they replicate to every controller, but
// they are not etcd clients' business: with the manual install's
// unauthenticated etcd, anyone on the management network could otherwise
// read the hashes or write an administrator.
//
// Two ways in, two rules:
//
//   - The broker (this process) uses Store.KV: etcd's KV server called in
//     process, through the adapters of etcd's v3client, never through the
//     client port. It needs no dial, no certificate (an etcd.conf with
//     https client URLs and client-certificate auth no longer leaves
//     startup waiting) and no password. When an operator turns etcd auth
//     on, each call carries a root token issued in this process by etcd's
//     auth store (AuthStore.WithRoot: what etcd itself does to revoke
//     leases and to answer /health); root always exists while auth is on,
//     and the token never leaves the process. A token etcd has expired or
//     outdated is replaced and the call retried once. Alternatives
//     considered: a substrate etcd user with a password in the data
//     directory (every member of a cluster would need the same secret, and
//     an operator could delete the user), and client-certificate identity
//     (only when client-cert auth is on).
//
//   - Clients of the client port (gRPC, and the JSON gateway on /v3/,
//     /v3alpha/ and /v3beta/, which dials the same gRPC server) pass
//     through interceptors (reserved.go) added with
//     embed.Config.GRPCAdditionalServerOptions, the hook that also carries
//     the panic recovery of faults.go:
//     Range and RangeStream leave the reserved keys out of the keys, the
//     count and "more", at the revision etcd read at (a limited range asks
//     for as many more keys as are reserved, then trims); watches, on any
//     range including every key, never carry an event for a reserved key
//     (a response left empty is not sent: it would read as a progress
//     notification); Put, DeleteRange and Txn (compares and operations, at
//     any depth of nesting) that touch a reserved key are refused with
//     etcd's own "etcdserver: permission denied" (gRPC PermissionDenied,
//     HTTP 403 on the gateway). A DeleteRange that spans the prefix
//     (etcdctl del --prefix "") is refused whole, not clipped, as etcd's
//     auth refuses a delete over a range the user may not write: nothing is
//     half done. The lock and election services, which write keys
//     NAME/LEASE through their own in-process client, refuse names whose
//     keys would fall under the prefix. Snapshot (Maintenance/Snapshot)
//     holds every key: it is refused while etcd auth is off, and is root's
//     only (etcd's own rule) once it is on. Leases, compaction, members,
//     alarms, status and auth management are global and unchanged. Every
//     other key behaves exactly as in etcd, for any user, root included.
//
// The filter is on in `substrate etcd` too: such a member may share a
// cluster with serve's members, and the broker's keys replicate to it.
//
// What stays reachable: the peer port (an etcd member, or anyone who can
// add one with `etcdctl member add` on an unauthenticated cluster,
// receives the whole store through Raft, as with etcd itself; peer TLS
// with client-certificate auth closes that), and the data directory on
// disk (0700, as etcd keeps it).
//
// A broker record that does not decode is the broker's business:
// broker/etcddefs logs it with its key and leaves it out.
//
// # Speed against etcd 3.4
//
// kvbench compares the member with Debian's etcd 3.4. What was measured
// in session 8 (2-core paravirtualized VM, load 2-5, perf of both
// servers under the same load), so that it is not measured again:
//
//   - 100 clients: CPU per put 1.0-1.2x of 3.4's; throughput within the
//     noise (0.9-1.2x). The syscalls and context switches per put are
//     the same (about 0.06 fdatasync, 0.8-0.9 switches); the difference is
//     etcd 3.7's own Go code (request path and apply about 11 us more
//     per put: more applier layers, a no-op tracing span, Raft messages
//     in google.golang.org/protobuf with pointer fields).
//   - 1 client: latency 1.2x (p50 0.85 against 0.70 ms), because
//     go.etcd.io/raft/v3 >= 3.6 commits a leader's entry only once it has
//     acknowledged its own append after the WAL sync (a MsgAppResp to
//     itself, handled after Advance), where 3.4's raft committed it in
//     the same Ready and etcd applied it while the WAL synced. No setting
//     changes that. The CPU per put (1.4x) follows: sysmon polls and
//     scheduler wake-ups cost per second, not per put, and are spread
//     over fewer puts.
//   - Tried, no difference beyond the noise (alternating rounds): 3.4's
//     defaults where 3.7's differ (bbolt freelist "array", snapshot count
//     100,000), snapshot-catchup-entries 500, GOGC 640 and 1000 (RSS
//     +35-80 MiB), Go's older GC (GOEXPERIMENT=nogreenteagc), gRPC server
//     options (NumStreamWorkers(GOMAXPROCS), SharedWriteBuffer; session 9,
//     3 rounds each: 78-96 us/put either way); the backend
//     batch interval and limit are 3.4's already (100 ms, 10,000). The
//     interceptors of reserved.go and faults.go cost about 0.6% of the
//     member's CPU.
//   - GOMAXPROCS=1 cuts the CPU per put at 100 clients by 30-35% for
//     both versions (fewer wake-ups of idle Ps, each a costly context
//     switch on this VM), but puts/s fall 7-13% (one core), and it is
//     process-wide: the broker and the cache share the scheduler.
//
// # Goroutines
//
// Besides etcd's own: Store.watch (reports a failure of the running
// member on Err) and Store.tuneGC (raises GOGC while the member applies
// writes quickly, gc.go), both from Start's return until Shutdown, which
// waits for them.
package kvstore
