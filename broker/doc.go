// Package broker is substrate's AMQP 0-9-1 broker: the part of RabbitMQ
// 3.10.8 that OpenStack's oslo.messaging (kombu, py-amqp) and other
// AMQP 0-9-1 clients use, with RabbitMQ's reply codes, texts and frame
// order. The wire codec is broker/amqp; this package owns connections,
// channels, exchanges, queues, users and permissions.
//
// # Use
//
//	cfg := broker.NewConfig()          // 127.0.0.1:5672, heartbeat 60 s, frame_max 131072, channel_max 2047
//	cfg.Definitions = defs             // etcd-backed in production; nil: in memory
//	s, err := broker.New(cfg)
//	err = s.Start(ctx)                 // loads definitions, binds, returns when accepting
//	...
//	err = s.Shutdown(ctx)              // 320 CONNECTION_FORCED to every client, waits for goroutines
//
// The admin methods (AddUser, SetPermissions in auth.go; vhosts, Queues,
// Connections, Channels, Consumers, Overview, CloseConnection in
// admin.go; the message counters in stats.go) back `substrate ctl`, the
// management API and /metrics.
//
// # What is stored where
//
// Users, vhosts and permissions live in memory (Server.users, perms,
// vhosts) for the login and permission hot path and are written through
// to Definitions on every change. auth.go holds users, permissions and
// their compiled regular expressions, the SASL mechanisms and the
// permission check channels make; tls.go the AMQPS listeners
// (Config.TLSAddrs) and EXTERNAL. A TLS connection's handshake runs on
// its reader goroutine, before the protocol header and within the
// handshake timeout, never on the accept loop. Durable exchanges, durable non-exclusive
// queues and bindings whose both ends are durable are written to
// Definitions when declared or bound and deleted with them; Start
// recreates them. Transient entities never touch Definitions. Each Queue
// keeps its ready messages in memory (memStore, priorityStore); persistent
// messages of durable queues are also written to the message store
// (broker/store, Config.StoreDir; persist.go), which pages deep backlogs
// out of memory and brings them back after a restart.
//
// # Goroutines
//
// Per connection there is one goroutine while it has input (none while
// it is idle, see below), and a second one while there is output:
//
//   - the reader (conn.serve) runs the handshake, then reads frames with
//     amqp.FrameReader and executes every method synchronously, in order;
//     it owns the channels map and each channel's reader-side state
//     (confirm/tx mode, content being assembled, consumer prefetch for new
//     consumers, the publish-permission cache). An idle reader waits on a
//     512-byte buffer; a busy one reads into a 32 KB buffer from a pool
//     shared by all connections, given back once its input is parsed;
//   - a writer (conn.writeLoop) owns the socket's write side while it
//     runs. Producers append complete encoded frames to the connection's
//     outbound buffer (outbound.mu); the first append to an idle
//     connection starts a writer (outbound.kick; at most one runs,
//     outbound.running), which swaps the buffer out and writes it with one
//     syscall, so frames produced while it writes go out together in the
//     next write (coalesced flushes, as nats-server's flushOutbound), and
//     ends when it finds the buffer empty, keeping no buffer. Buffers
//     come from two pools (4 KB, and 64 KB chunks: a large output is a
//     list of chunks written with one writev) and go back when written,
//     so sending allocates nothing and a backlog is never copied to grow;
//   - output a reader queues while it handles its input (deliveries its
//     publishes and acks cause on any connection, its own publisher
//     confirms) starts no writer: the connection joins the reader's
//     flusher (conn.fl, outbound.kickFor) and the reader writes it
//     itself, one non-blocking write per connection (conn.writeNow),
//     before it next reads its socket or does anything that may block
//     (every method but basic.ack/nack/reject, channel 0, an alarm), the
//     other connections first, its own last. What the socket does not
//     take, what is appended meanwhile, and more than inlineMax (32 KB)
//     go to a writer as above; so do TLS and piped connections, and any
//     write while a fault is armed or the Fence is not held. An RPC's
//     request and reply thus each cost the broker one read and one write
//     per connection, with no goroutine started or woken (the writer
//     goroutine and its wake-up cost more CPU than the write itself).
//
// System calls: on a plain socket the reader's reads (conn.readNow) and
// the inline and writer writes (conn.writeRaw) are made raw
// (syscall.RawSyscall, the socket being non-blocking), and an empty
// socket parks the reader in Go's poller as net.Conn does. A call made
// through the scheduler (runtime.entersyscall) lets the monitor thread
// (sysmon) take the P away when it runs past 20 us and wakes that thread
// from its sleep; on a small virtual machine those hand-offs and
// wake-ups cost more than the reads and writes: with them, sysmon alone
// was 17% of the broker's CPU in an RPC loop (perf), 3% without, and the
// server's CPU per call fell about 15%.
//
// Heartbeats are a timer (conn.sendHeartbeat, every heartbeat/2), which
// queues a heartbeat frame when nothing was written for that long, and
// the reader's read deadline: a client silent for two intervals is
// closed (the deadline moves only when it has come 1/16 closer, so
// after 2 to 2 1/8 intervals; conn.pushDeadline). At
// teardown (conn.shut) the reader marks the output stopping, lets the
// running writer (or one it starts) write what is queued within a second,
// and waits until no writer runs; then the output is dead (appends are
// dropped) and conn.writerDone closes, as it does after a failed write or
// a writer's panic.
//
// Idle connections (park_linux.go): most of an OpenStack cloud's
// connections are idle most of the time (a reply queue's consumer
// between calls, a service between heartbeats), and a reader waiting
// costs a goroutine whose stack cannot shrink below 4 KB (the runtime
// keeps a quarter free, and the wait's call chain is deeper than the
// rest), which Go's collector counts again in its heap goal: about 10 KB
// of RSS per connection of the 20 a storm of 2,000 measured. So a reader
// on a plain socket whose read deadline (Server.parkAfter, one second,
// or the heartbeat timeout if shorter) passes at a frame boundary with
// nothing read gets amqp.ErrIdle from Read, gives the frame reader's
// pooled buffer back, and parks: the parker registers the socket in its
// epoll set (one-shot) and the goroutine ends, keeping its count in
// Server.wg. A new reader goroutine resumes the connection (conn.resume,
// the same loop) when the socket becomes readable, when the heartbeat
// timeout comes (a timer; the resumed reader finds the client silent
// and closes it as a waiting reader would), or when anything else closes
// the socket: every close but the reader's own goes through
// conn.closeSocket, which takes the connection from the parker under the
// parker's lock before closing, so that no descriptor is registered after
// its socket closed. Writes need no reader (deliveries, heartbeats and a
// connection.close from Shutdown go out from a parked connection as from
// any other). An idle parked connection costs about 5 KB of heap and no
// goroutine (TestIdleConnectionFootprint, BenchmarkIdleConnections); the
// first frame after a second of silence costs a goroutine start. TLS
// and piped connections keep their waiting reader.
//
// Queues have no goroutine: a publish, an ack or a consume runs the
// queue's code on the caller's goroutine under the queue's lock, and
// deliveries are encoded straight into the consumer's connection buffer.
// Timers (time.AfterFunc) run x-expires and message-TTL expiry (and
// publish dead letters collected under vhost.mu, see below). Accept
// loops run one per listener. A direct connection (DirectConn, the
// management API's, mgmt_ops.go) is one end of a net.Pipe admitted as an
// accepted socket: the same reader and writer, listed and shut down with
// the others. Server.wg counts accept loops, readers (a parked one
// included: its count passes to the reader that resumes it) and running
// writers (a writer is added only while its connection's reader runs or
// is parked); Shutdown waits for it.
//
// Each of these goroutines recovers its own panic (internal/faults: one
// ERROR line with peer and stack, counted in substrate_panics_total):
//
//   - reader (site amqp.reader, subject: the method and its arguments):
//     connection.close 541 INTERNAL_ERROR, channels torn down (unacked
//     messages requeued), wait for close-ok, then the usual teardown
//     (exclusive queues deleted); safeTeardown still stops the writer and
//     forgets the connection if teardown itself panics;
//   - writer (amqp.writer, subject: the client's connection_name, else
//     its address): output ends (writerDone), 541 written directly, socket
//     closed after the grace;
//   - store commit hooks sending confirms (amqp.confirm), on the store's
//     committer: 541 to that connection; the committer goes on;
//   - the close timer (amqp.close-timer): the socket is closed anyway;
//   - the parker's wake of a parked connection (amqp.park-wake, subject:
//     as the writer's; on the parker's goroutine, which serves every
//     parked connection, or on the connection's heartbeat timer): that
//     connection gets 541 and its reader is resumed to wait for close-ok;
//     the parker goes on;
//   - queue timers, message TTL (amqp.queue-ttl) and x-expires
//     (amqp.queue-expires): the queue's, not a connection's; logged and
//     counted, that expiry is skipped (the next use re-arms it);
//   - routing dead letters (amqp.deadletter, subject: the queue name, in
//     vhost.publishDead, on whichever goroutine released the queue's lock:
//     a rejecting client's reader, a TTL timer, flushDeadLater): the
//     queue's; the dead letters not yet routed go back to Queue.dead for
//     its next unlock, and that goroutine goes on;
//   - the accept loop (amqp.accept, subject: the peer address): that
//     socket is closed, the loop goes on.
//
// Injection points sit where no lock is held, and the sections that
// hold vhost.mu or outbound.mu around calls that could panic unlock by
// defer (vhost.unlinkQueue, outbound.take), so a panic leaves no lock
// held. An accept error such as EMFILE makes the loop sleep (5 ms
// doubling to 1 s, internal/netutil) rather than spin or stop; with
// Config.MaxConnections (connection_max) it stops accepting while that
// many of its connections are open, as RabbitMQ's ranch listener does:
// further clients wait in the listen backlog. Per-connection log lines
// are rate-limited per peer IP (logging.Limiter, Server.peers).
//
// Publishers never wait for consumers: a queue delivers only to consumers
// with credit (prefetch, per consumer or per channel) whose connection has
// less than outSoftLimit bytes unsent; otherwise messages wait in the
// queue. When a writer drains a throttled connection it wakes the queues
// of its consumers. A reader stops reading its socket while its own
// connection has more than outHardLimit bytes unsent (a client that does
// not read its replies gets TCP backpressure).
//
// # Memory and disk
//
// The broker counts its own memory (memory.go, memAccount; Server.MemoryUsed):
// message bodies and properties held by queues (ready, not paged out) and by
// unacknowledged deliveries, a message shared by several queues once
// (message.refs counts its holders); bodies still being assembled on
// channels and messages held by open transactions; and connections' output
// buffers, including the one a writer is writing. Each is an atomic counter
// updated where the bytes come and go, so the publish path takes no lock
// for it. The cache and etcd share the process and are not counted: a full
// cache never blocks a publisher.
//
// A body buffer grows with the body frames that arrive (doubling, capped at
// the declared size), never to the declared size at the header: a header
// declaring 128 MiB costs nothing until its bytes come.
//
// Two resource alarms, as RabbitMQ's: memory (MemoryUsed above
// Config.MemoryHighWatermark, checked every 100 ms) and disk (the free
// space of StoreDir's filesystem below Config.DiskFreeLimit, checked every
// second; disk.go). While either is on, a connection is blocked after the
// next content header or body frame it sends, before the body is read:
// connection.blocked "low on memory", "low on disk" or "low on disk &
// memory" (RabbitMQ 3.10's texts), then nothing is read from it until every
// alarm is off (connection.unblocked). Consumers go on.
//
// A consumer that stops reading gets at most outSoftLimit (1 MiB) of
// deliveries buffered on its connection, plus what its writer has in hand;
// past that its queues keep the messages (the role of RabbitMQ's credit
// flow).
//
// tx.commit stages the transaction's messages (appending the persistent
// ones to the message store) and makes them visible only once the store
// has made them durable; if the store fails or a queue refuses one
// (x-overflow reject-publish), none is delivered and the channel gets 406
// "partial tx completion", RabbitMQ's error for a transaction a queue could
// not take. A failed store write nacks the confirms it covered
// and is not sticky (broker/store).
//
// # Queue features (RabbitMQ 3.10)
//
// Queue arguments are validated on declare as RabbitMQ 3.10 does
// (checkQueueArgs: its argument order, which arguments each queue type
// takes, its reply texts; testdata/queue-args.golden). Implemented:
//
//   - dead-lettering (deadletter.go): x-dead-letter-exchange and
//     -routing-key for messages rejected without requeue, expired
//     (x-message-ttl, expiration), dropped by x-max-length(-bytes) or
//     refused by reject-publish-dlx, and over a quorum queue's
//     x-delivery-limit; x-death and x-first-death-* headers byte for byte
//     as RabbitMQ writes them (testdata/dead-letter-headers.golden); the
//     expiration property removed; cycles without a rejection broken;
//   - x-max-length and x-max-length-bytes (ready messages, body bytes)
//     with x-overflow drop-head, reject-publish (basic.nack to a confirming
//     publisher) and reject-publish-dlx;
//   - x-max-priority (priorityStore: one FIFO per priority; expiry and
//     drop-head look at the head only, as rabbit_priority_queue);
//   - consumer priorities (x-priority) and x-single-active-consumer
//     (the first consumer is active; when it goes, the highest-priority,
//     earliest one takes over);
//   - quorum queues' delivery counting: x-delivery-count on redeliveries
//     (always on basic.get), x-delivery-limit, no global QoS (540).
//
// Quorum queues are otherwise classic queues in memory: no replication,
// no at-least-once dead-lettering.
//
// Policies and operator policies (policy.go, RabbitMQ's rules and texts)
// set the same settings without arguments, for existing and future
// queues, and alternate-exchange for exchanges (argument or policy;
// vhost.route follows it). A vhost's policies are one immutable set
// (vhost.policies, an atomic pointer) replaced under adminMu and
// vhost.cfgMu, so no declare races a change; each queue then recomputes
// its settings under Queue.mu (applyPolicyLocked) with no vhost lock
// held, since a shrinking max-length may dead-letter. A dead letter
// carries the dead-letter exchange and routing key of the moment it died.
// Policies are stored in Definitions; rabbitdefs.go reads and writes
// RabbitMQ's definitions file (export_definitions, import_definitions).
//
// Publisher confirms are coalesced: the reader counts confirmable
// publishes per channel and sends one basic.ack (multiple when it covers
// several) when it has no more buffered input, before any other method on
// the connection is handled, before a channel.close, and before a socket
// read once confirmBatch (256) publishes wait (a publisher that streams
// faster than the broker reads never lets the input run dry, and would
// otherwise get no confirm until it paused). A basic.return
// for an unroutable mandatory message is appended while the publish is
// handled, so it always precedes its ack. A publish a queue refuses
// (x-overflow reject-publish) is confirmed at once: basic.ack for the
// publishes before it, then basic.nack for it.
//
// # Ownership and locks
//
// Lock order (a goroutine holding a lock may take only locks below it):
//
//	Server.lnMu               Start (held while it loads definitions and binds) and the listener list
//	Server.adminMu            admin changes and their Definitions writes
//	  vhost.cfgMu             declare/delete/bind/unbind of one vhost, with their Definitions writes
//	    vhost.mu (RW)         exchanges, queues map, bindings, routing indexes; publishers take it for reading
//	      Queue.mu            ready messages, consumers (active, priorities), counters, expiry timers, pending dead letters
//	        store (Disk.mu)   the message store, called under Queue.mu so its order is the queue's (leaf inside the store)
//	        channel.mu        delivery tags, unacked list, global prefetch, consumers map
//	          outbound.mu     the connection's output buffer (leaf); a reader's flusher (conn.fl)
//	                          is reader-owned and appended to under it
//	confirms.mu               a channel's publisher confirms; taken by the reader and by the store's
//	                          committer (Commit.AfterFunc), with only outbound.mu below it
//	alarm.mu                  the resource alarms' state (leaf); the publish path reads alarm.active
//	                          (atomic) and takes it only when an alarm is on
//	Server.connMu             the connections map and the statistics of ended connections (overall, per vhost)
//	  conn.mu                 (a leaf, below) also guards a connection's channels map (written by its
//	                          reader under it) and the counters of its ended channels; Overview,
//	                          VHostStats and removeConn sum counters under both (and read Server.vhMu)
//	Server.vhMu, Server.authMu, conn.mu, conn.consMu, parker.mu
//	                          leaves: held only to read or update their maps, never while taking another lock
//	                          (parker.mu also around epoll_ctl and the close of a socket; any lock may be held)
//
// Definitions are called with only adminMu or vhost.cfgMu held, never a
// queue's, exchange's or vhost.mu. Two waits on the store's fsync happen
// with a lock held, and the committer never needs either: deleteQueue
// waits for the drop of a durable queue's messages holding vhost.cfgMu,
// and tx.commit for its messages on the reader goroutine. conn.mu guards the connection's user,
// vhost, client properties and exclusive queues for other goroutines
// (admin listing, DeleteUser). Channel state before channel.mu in the
// struct belongs to the reader goroutine only; what the admin listings
// need of it is mirrored in atomics the reader sets (channel.modes,
// qos, txMsgs, txAckCount). The reader reads conn.channels
// without a lock and takes conn.mu only to add or remove a channel;
// Channels() takes it to copy the map.
//
// Message statistics (stats.go) add no lock to the hot path: a channel's
// counters are atomics, a queue's are plain fields under Queue.mu, which
// publish, deliver and ack hold anyway; the global ones are sums of the
// channels' (see stats.go for how counters of ended channels and
// connections are kept so the sums never go back).
//
// A publish takes vhost.mu for reading to route, releases it, then takes
// each target queue's lock in turn; there is no global lock on the publish
// path. An ack takes channel.mu to remove the deliveries, releases it,
// then takes each queue's lock to free credit and deliver more.
//
// Dead letters are never published under a queue's lock: a queue
// collects them (Queue.dead) under Queue.mu and publishes them once it has
// released it (Queue.unlock), taking vhost.mu for reading to route and
// then each target queue's lock in turn, like a publish; a target may
// dead-letter in turn (drop-head) the same way. Code that holds vhost.mu
// while it takes a queue's lock (deleteQueue's checks, markDeleted) hands
// collected dead letters to a timer goroutine (flushDeadLater) instead.
//
// # Clusters (docs/cluster.md)
//
// In a three-controller cluster the broker runs on the Raft leader only
// (internal/cluster): each leadership term gets a new Server with
// Config.External (connections come through Serve from the node's own
// listeners, forwarded from the other nodes) and Config.Log set to the
// Raft-replicated store (broker/replica). The replicated part is in one
// place: the message store behind store.Log, whose appends, deliveries,
// acks and drops are the state machine's records; connections, channels,
// consumers and transient queues are the leader's alone and end with its
// term. A confirm waits for the store's Commit, which the replicated store
// completes when a majority has the entry, so a broker that lost its
// term can never confirm; Start recovers the queues from the store as
// after a restart. Deliveries come from memory, not from the log, so
// Config.Fence (the term's leader lease) gates every write to a client:
// the connection's writer holds its output while the lease is not held
// and closes the connection once the term is lost, so a deposed leader
// that wakes from a pause sends nothing its successor may also send.
// Which nodes make up the group is none of the broker's concern: it
// follows etcd's membership (internal/cluster, "Membership"), and a
// change of it never stops the active broker.
//
// # Errors
//
// Handlers return *amqp.Error values carrying the reply code, RabbitMQ's
// reply text and the class and method id; the reader turns a soft one into
// channel.close (then ignores that channel until close-ok) and a hard one
// into connection.close (its channels end at once; it then waits up to two
// seconds for close-ok). As in RabbitMQ, a handshake that fails before
// connection.open (bad SASL response, unknown mechanism, unacceptable
// tune-ok, a refused login from a client without
// authentication_failure_close) gets no connection.close: the socket is
// closed after a 3-second delay. A refused login from a client with that
// capability gets connection.close 403; an unknown or forbidden vhost gets
// 530, and so does a vhost at its max-connections ("access to vhost 'v'
// refused for user 'u': connection limit (N) is reached", checked before
// the permission, as rabbit_reader does). A queue.declare of a new queue
// beyond the vhost's max-queues gets 406 "cannot declare queue 'q': queue
// limit in vhost 'v' (N) is reached" (before the arguments are checked,
// as rabbit_channel). Vhost limits (set_vhost_limits) are stored with the
// vhost in Definitions. Every refused login is logged with user and peer.
// A panic anywhere on a connection's behalf closes it with 541
// INTERNAL_ERROR (see Goroutines). The texts and codes are checked against
// RabbitMQ 3.10.8 by the *MatchRabbitMQ tests (testdata/*.golden were
// recorded from it).
//
// # Tests
//
// Client-level tests use github.com/rabbitmq/amqp091-go on loopback; those
// that call forTargets run their body twice, against a fresh substrate
// broker and against a private RabbitMQ node that TestMain starts when
// Debian's rabbitmq-server is installed (or the one named by
// SUBSTRATE_TEST_RABBITMQ=amqp://…), which checks the tests themselves.
// With SUBSTRATE_REQUIRE_CLIENTS=1 a missing RabbitMQ fails them. Frame-order
// tests use a raw client built on the codec.
package broker
