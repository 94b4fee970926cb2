// Package cache is a memcached 1.6.18 drop-in server: the classic text
// protocol, the meta protocol (mg, ms, md, ma, mn, me) and the binary
// protocol with SASL PLAIN, with memcached's reply strings, status codes,
// limits and quirks, over TCP, a unix socket and UDP, with a hard memory
// limit and LRU eviction.
//
// The wire codecs are independent of the connection: Parser.Parse takes
// bytes and returns a Command or a protocol *Error whose Reply is the exact
// line memcached sends; BinaryParser.Parse returns a BinaryRequest or a
// *BinaryError carrying memcached's status, whether it closes the
// connection and how many bytes it discards. The Server owns listeners and
// connections and executes commands against the store.
//
// # Protocols and listeners
//
// As with memcached -B auto, each TCP or unix-socket connection picks its
// protocol from its first byte: 0x80 is binary, anything else text. With
// Config.SASL (memcached -S) every connection is binary: text bytes are
// read as a binary header and, once 24 have arrived, the bad magic byte
// closes the connection. Binary opcodes served: get(q), getk(q), set(q),
// add(q), replace(q), delete(q), incr(q), decr(q), append(q), prepend(q),
// touch, gat(q), gatk(q), flush(q), noop, version, stat, quit(q) and the
// SASL list-mechs, auth and step; others answer "Unknown command".
//
// SASL offers only PLAIN. Credentials come from Config.SASLPasswordFile, in
// the format of memcached's MEMCACHED_SASL_PWDB file: one "user:password"
// per line, with anything after a further ':' ignored (so a password cannot
// contain ':'), CR LF line ends accepted, blank lines skipped, the first
// line for a user winning, lines at most 255 bytes. New checks the file (a
// malformed line is reported as file:line) and, as memcached does, every
// login reads it again: users added after start can log in, removed ones
// cannot (a login while the file is unreadable or malformed is refused). A PLAIN authorization
// identity must be empty or equal to the user. Debian's memcached does not
// read such a file (it is built with Cyrus SASL and reads a sasldb named in
// $SASL_CONF_PATH/memcached.conf); the wire behaviour is the same.
//
// Config.TLS serves TLS on the Addrs listeners (memcached -Z and its -o
// ssl_* options, with crypto/tls); Config.NoTLSAddrs stay plain (memcached's
// "-l notls:"). New loads the certificate chain, key and CA file in
// memcached's order and fails with a *TLSError carrying memcached's message
// (OpenSSL's wording for the common failures); the text command
// refresh_certs reloads them. ssl_verify_mode 1 verifies a client
// certificate when one is sent, 2 and 3 require one; without ssl_ca_cert no
// client certificate verifies. A client that does not speak TLS is dropped
// without a reply. The connection limit is checked, and its error sent, in
// plain text before the handshake, as memcached does.
//
// Config.UnixSocket listens on a unix socket too (memcached -s; memcached
// then opens no TCP port, checked, nor per its source a UDP one; Config
// leaves that choice to the caller);
// a stale socket file is replaced, the mode is Config.UnixMask (-a) and the
// file is removed at Shutdown. Config.UDPAddrs serve the text and binary
// protocols over UDP (-U) with memcached's 8-byte frame header: one run of
// datagrams of at most 1400 bytes per response object (per command; for get, per hit, with
// END on the last), sequence numbers from 0 in each run. A datagram whose
// first byte is 0x80 holds binary requests (negotiated per datagram), one
// response object each; a quiet request that answers nothing yields one
// header-only datagram with a count of 0 if no response of that datagram
// was sent before it, and nothing otherwise.
//
// # Concurrency
//
// Ownership:
//   - Server.mu guards started, closed, listeners, the conns set, the
//     loops list and, after a handover, evConn.nc.
//   - Each connection's buffers, Parser, writer and raw socket I/O state
//     (rawIO) belong to whoever serves it: its serve goroutine, or the
//     event loop holding it, or after a handover the goroutine it was
//     handed to; only conn.nc.Close or evConn.nc.Close (Shutdown) and the
//     atomic lastCmd (stats conns) are touched from elsewhere.
//   - An event loop's epoll set, conns map and event buffer belong to the
//     goroutine running it; its pending list (accepted, not yet
//     registered) to loop.mu, taken under Server.mu by the accept loop.
//   - The store has 64 shards; shard.mu guards that shard's hash index,
//     item chunks, free list, LRU list and shard counters. Item buffers (key+value) are
//     immutable once linked, so a reader copies the slice header under the
//     lock and writes the value to the socket after unlocking.
//   - store.used/limit, the CAS counter, the flush markers and serverStats
//     are atomics. Each event loop has counters of its own (loopState.
//     stats, as memcached's per-thread stats), which its connections use
//     (conn.st) and "stats" adds up (statsSum); a loop's spare read and
//     write buffers and its clock reading (loopState) belong to the
//     goroutine running the loop and are lent to the connection it serves.
//
// Lock order: Server.mu may be held while taking a shard lock only in
// stats (never the reverse). At most one shard lock is held at a time:
// memory is reserved (evicting from shard tails, each under its own lock)
// before the target shard is locked, so eviction never nests shard locks.
//
// Goroutines: one accept loop per listener (for a plain TCP listener
// whose connections the loops serve, accept4 on a duplicate of its
// descriptor, rawAccepter, so that an accepted socket never enters Go's
// poller; Shutdown closes both); for plain TCP connections
// (on Linux) event loops (evloop_linux.go), each over its own epoll set:
// with Config.Threads (memcached -t; substrate memcached, which sets
// GOMAXPROCS above it) that many, each locked to an OS thread that sleeps
// in epoll_wait as a memcached worker does; without it (substrate serve)
// GOMAXPROCS loops that wait for their epoll set on Go's poller; one
// serve goroutine per TLS or
// unix-socket connection, and per TCP connection a loop handed over
// because a reply could not be written at once (the goroutine that ran
// the loop keeps the connection and starts a new one for the loop); one
// reader per UDP socket (which owns that socket's parser and reply
// buffers); all counted in Server.wg. Shutdown closes listeners, UDP
// sockets and goroutine-served connections, tells the loops to close
// theirs and end, and waits for wg. Lock order: Server.mu, then loop.mu.
// Text and binary connections share one parse/execute loop (conn.process,
// conn.go), whichever serves them; storeRequest (storereq.go) maps the
// storage commands of the text, binary and meta protocols to store
// requests. A binary connection's parser
// and SASL state (binConn) belong to its serve goroutine; the SASL password
// file is read by each login. The TLS configuration is swapped atomically by
// refresh_certs (tlsState.cur); a handshake uses the one current at its
// start. A UDP socket's binary state (udpConn.bin) belongs to its reader.
//
// # Event loops: what was measured
//
// On this project's 2-core shared VM, memcaslap -T 2 -c 50 (its default
// mix: 90% get / 10% set, small values) against `substrate memcached` and
// memcached 1.6.18 with the same flags, alternating, medians (make bench's
// maslap phase; other work on the host put the load average at 5-13):
//   - A goroutine per connection made 1.8 read(2) calls per request: after
//     each reply the reader read again, found nothing (EAGAIN) and parked.
//     memaslap ratio 0.74x, server CPU per op 1.29x.
//   - GOMAXPROCS (2) loops parked on Go's poller: one read, one write and
//     0.2 epoll_pwait per request, server CPU per op 0.9-1.0x memcached's,
//     yet ops/s 0.79-0.87x. The kernel shares the CPU per thread: the two
//     loops' threads almost never slept (0.05 sleeps, 0.1 preemptions per
//     request) and waited their turn, while memcaslap ran out of work and
//     slept 0.12 times per request; memcached's four workers sleep in
//     epoll_wait (0.25 per request), are woken by the kernel when a
//     request arrives and preempt memcaslap (0.16-0.2 times per request).
//     -t 4 (four such loops) did not change that.
//   - Loops on threads of their own, blocking in epoll_wait (now, with
//     -t): the same signature as memcached (0.19-0.25 sleeps, 0.03
//     preemptions per request; memcaslap preempted 0.1-0.15 times, rarely
//     waiting), 0.26 epoll_pwait per request, ops/s 1.03-1.12x (medians of
//     6-10 alternating rounds), server CPU per op 1.07-1.13x. What it took:
//     the epoll descriptor off Go's poller (else every event also woke the
//     runtime's poller thread), the goroutine locked to its thread (12%
//     more ops/s than unlocked), GOMAXPROCS above the loops (else the
//     runtime takes a waiting loop's P at once and sysmon polls every
//     20 us: 6% of the CPU), and a yield every yieldEvery (else sysmon
//     preempts each loop every 10 ms and does the same). Idle, the loops
//     make no wake-ups at all. The extra CPU per op against memcached was
//     the Go side of a request (parse, store, bufio; 2-3 us) and the
//     yields' thread switches (0.04 futex calls per request).
//   - Session 7, the Go side of a request (perf record -g of both servers
//     in the same alternating memcaslap run, load 7-10): no allocation
//     per request (TestLoopRequestAllocs; a boxed io.Writer per request
//     before), one write and one read buffer per loop lent to the
//     connection being served (a sync.Pool round trip per request and
//     4 KiB per connection before), per-loop counters (shared atomics
//     before), one clock reading per wake-up for gets, and the yield made
//     with the thread unlocked: runtime scheduling and futex calls 1.2 ->
//     0.5 us per request, conn.process 2.6 -> 2.0 us, server CPU 14.2 ->
//     11.8 us per request in that profile; /proc's CPU time per request,
//     medians of 16 alternating rounds, 4% less. Accepting with accept4
//     on the loops' own descriptor (rawAccepter) and recycling a loop's
//     conns: churn CPU per connection 162 -> 140 us (memcached 143).
//   - What is left against memcached in that profile is mostly in the
//     kernel: the same system calls per request (one read, one write,
//     0.25 epoll_wait) cost more in substrate's threads (the TCP send
//     path 3.4-4.4 us against 3.7), page faults of a growing Go heap
//     (0.45 us against 0.19: garbage is reused only after a GC, so a
//     growing heap touches up to twice the memory), and the one more
//     cache miss of a lookup (index entry, item record, then the key,
//     where memcached's item holds its key).
//   - substrate serve keeps the loops on Go's poller: threads holding Ps
//     while they wait would delay the broker's and etcd's goroutines.
//
// # Clock
//
// Times are memcached's: seconds since start (clock), so expiry has
// memcached's one-second resolution. memcached reads a clock its main
// thread updates once a second (current_time); we read the monotonic
// clock, and a loop reads it once per wake-up for the text gets of that
// batch and the connections' last-command times ("stats conns";
// conn.now), microseconds before they run. The other commands read it
// afresh; for storage commands and flush_all it matters: an item's time
// decides whether an earlier flush_all covers it, and a batch's reading
// from before a second boundary would make an item stored after a
// flush_all look flushed.
//
// # Faults
//
// A panic while serving a client (parsing, executing a command, the TLS
// handshake) is recovered in the goroutine serving that connection (an
// event loop recovers around each connection's turn and goes on with the
// others; TestLoopPanicSparesItsLoop): one ERROR
// line with the peer and the stack, substrate_panics_total{service=
// "memcached"} goes up, and only that connection is closed, without a
// reply (memcached has none for this); replies still buffered for it are
// dropped. Over UDP only the datagram is dropped and the socket's reader
// goes on. Such a panic leaves no shard locked: store.go releases its
// shard locks by defer, and the meta commands, which unlock by hand before
// writing their reply, lock through conn.lockShard so the recovery can
// release the shard (stats' slab scan still unlocks by hand). Test hooks:
// SiteConn, SiteMeta, SiteBinary and SiteTLS (faults.go).
//
// Config.MaxMemoryLimit (substrate serve: the cache's -m, its share of
// the process's memory budget) caps cache_memlimit, which then answers
// "CLIENT_ERROR cannot set maxbytes to more than Nm ...".
//
// # Differences from memcached
//
//   - Eviction is per shard LRU (the writer's shard first, then others)
//     rather than memcached's per-slab-class segmented LRU. As there, a
//     hit does not relink the item but marks it active; an active item
//     that reaches its shard's tail goes back to the head once (second
//     chance) instead of being evicted.
//   - Memory is counted as memcached's "stats bytes" (a 48 B header, 8 B of
//     CAS unless -C, the key and value with their terminators, 4 B for non-zero
//     flags) without slab rounding, so slightly more items fit in one -m.
//   - MaxConns counts client connections only; memcached also counts about
//     20 internal descriptors.
//   - Binary protocol: we check that a value fits in -I before reading it
//     but reserve memory after, so with -M a set of a value larger than the
//     free memory is read before ENOMEM (memcached answers at once and
//     discards the value; the replies are the same).
//   - UDP: a command cut at the end of a datagram is dropped; memcached
//     keeps it in the socket's buffer and completes it with the next
//     datagram from anyone. Likewise after a binary error or noop memcached
//     only reads the rest of the datagram when the socket's next datagram
//     wakes it; we answer the whole datagram at once.
//   - TLS: Go's TLS stack chooses its cipher suites and buffers, so
//     ssl_ciphers, ssl_session_cache, ssl_kernel_tls and a non-default
//     ssl_wbuf_size are refused at start (see below). A failed certificate
//     load prints only memcached's own last line, not OpenSSL's error queue
//     before it. memcached 1.6.18 can stall when a command follows a large
//     value in the same TLS record stream; we do not.
//   - A get with a key over 250 bytes answers CLIENT_ERROR like memcached,
//     but memcached also drops replies of earlier pipelined commands that
//     it had not sent yet; we keep them.
//   - Too-large and out-of-memory replies for a storage command follow its
//     data block; memcached decides out-of-memory before reading the data,
//     we after, so for a block that is both malformed and unstorable we
//     answer "bad data chunk" where memcached answers out of memory.
//   - Statistics that describe memcached internals (slab mover, LRU
//     crawler, libevent, per-class eviction history in "stats items") are
//     reported with the right names but as 0; "stats items" and "stats
//     slabs" are computed by scanning the items into memcached's default
//     slab classes.
//   - Not implemented (answer ERROR): lru, lru_crawler, watch (with -W:
//     memcached's CLIENT_ERROR), stats cachedump (with -X: memcached's
//     CLIENT_ERROR), debugtime.
//
// # memcached options
//
// `substrate memcached` and serve's --memcached-options and
// --memcached-config take memcached 1.6.18's command line
// (internal/memcachedcli). Every option memcached accepts is either
// honoured, with its "stats settings" line as memcached prints it, or
// refused at start with one line, "substrate does not support memcached's
// OPTION: why" (exit status 1; under serve after `memcached options
// "...":`); none is ignored. An option given at memcached's default value
// is accepted ("default only" below): it asks for what substrate does.
// Tests: memcachedcli's TestCheck (each option's decision, standalone and
// under serve) and TestCheckCoversEveryOption (no option without one);
// memcachedcli's TestStatsSettingsMatchMemcached and cmd/substrate's
// TestCacheOptionsHonoured (stats settings of the honoured options, ours
// and memcached's); and the behaviour tests named in the table (cache
// package unless marked integration/).
//
//	option                            status        note (test)
//	-p -U -l -s -a                    honoured      listeners (unix_test, udp_test); -l's tag[...]: prefix
//	                                                too (only memcached's proxy reads it, absent from
//	                                                Debian's build); -l proto[...]: is refused
//	                                                (cmd/substrate TestCacheListenPrefixes)
//	-m -M -c -I -B                    honoured      limits, no eviction, protocol (behaviour_test)
//	-S                                honoured      SASL PLAIN (sasl_test)
//	-Z, -o ssl_chain_cert ssl_key     honoured      TLS (tls_test)
//	  ssl_keyformat ssl_verify_mode
//	  ssl_ca_cert ssl_min_version
//	-v                                honoured      stats verbosity; log level of substrate memcached
//	-u USER                           honoured      substrate memcached: root dropped after binding, the
//	                                                -s socket and -P file given to USER
//	                                                (integration/TestMemcachedDropsPrivileges);
//	                                                serve: not applied, one warning line (the process is substrate's)
//	-P                                honoured      substrate memcached (integration/TestMemcachedSubcommand);
//	                                                refused under serve
//	-t                                honoured      substrate memcached: that many event loops on threads of
//	                                                their own (default 4, as memcached), GOMAXPROCS
//	                                                max(CPUs, -t + 1), num_threads and threads
//	                                                (integration/TestMemcachedProcessOptions); serve: not applied,
//	                                                one warning line, num_threads shows GOMAXPROCS
//	-k, -r                            honoured      substrate memcached: mlockall, core limit raised
//	                                                (integration/TestMemcachedProcessOptions); refused under serve
//	-A                                honoured      substrate memcached: "shutdown [graceful]" closes the connection
//	                                                and the process exits 0 (TestShutdownCommand,
//	                                                integration/TestMemcachedProcessOptions); refused under serve:
//	                                                it would stop etcd and the broker too
//	-F                                honoured      flush_all refused as memcached does (TestDisableFlushAll)
//	-C                                honoured      CAS values 0, memcached's compare rules (TestDisableCAS)
//	-X                                honoured      stats cachedump refused (TestDisableDumping)
//	-W                                honoured      watch refused as memcached does (TestDisableWatch)
//	-b                                honoured      listen(2) backlog, ss Send-Q (TestListenBacklog)
//	-f -n -R                          default only  no slab classes; an event loop serves every ready
//	                                                connection's whole input at once
//	-d                                refused       no fork into the background (units do not pass -d)
//	-L -D -Y -e -N                    refused       large pages, per-prefix stats, ASCII auth, memory file, NAPI
//	-o maxconns_fast modern           honoured      what substrate does, or (inline_ascii_resp,
//	  (no_)inline_ascii_resp                        drop_privileges without seccomp) no effect in
//	  (no_)drop_privileges                          Debian's memcached 1.6.18 either
//	  relaxed_privileges resp_obj_mem_limit
//	  slab_reassign lru_crawler lru_maintainer
//	-o slab_automove(_ratio,_window)  default only  no slab pages, LRU threads or watch to tune
//	  hash_algorithm lru_crawler_sleep
//	  lru_crawler_tocrawl hot_lru_pct warm_lru_pct
//	  hot_max_factor warm_max_factor idle_timeout
//	  watcher_logbuf_size read_buf_mem_limit
//	  ssl_wbuf_size slab_chunk_max
//	-o no_maxconns_fast hashpower     refused       internals substrate does not have
//	  no_hashexpand no_slab_reassign
//	  no_slab_automove tail_repair_time
//	  no_lru_crawler no_lru_maintainer
//	  temporary_ttl slab_sizes worker_logbuf_size
//	  track_sizes no_chunked_items no_modern
//	  sock_cookie_id
//	-o ssl_ciphers ssl_session_cache  refused       Go's TLS stack
//	  ssl_kernel_tls
//	-o ext_* slab_automove_freeratio  refused       no extstore: substrate has no flash tier
package cache
