#!/usr/bin/python3
"""oslo.messaging with amqp_durable_queues=True and with
rabbit_quorum_queue=True across a broker restart.

usage: oslo_durable.py URL

Both modes run side by side, each with its own control exchange (a durable
`openstack` exchange would clash with the transient one the other tests
declare), so that one broker restart serves both:

 before  an RPC server (topic T, server srv1) answers calls to T and T.srv1
         and gets casts; a Notifier sends 15 notifications at the info,
         error and warn priorities (one body bigger than a frame) to topic N
         whose listener is not running, so they wait in N.info, N.error and
         N.warn. A transient control: a Notifier with default options sends
         2 notifications to its own non-durable N'.info.
         The queues and the control exchange are checked on the wire: a
         passive declare sees the backlog, a redeclare with durable=0
         (and, for quorum, x-queue-type=classic) is refused with 406
         inequivalent arg.
 restart the script prints "expect QUEUE DURABLE TYPE" lines (and
         "expect-prefix PREFIX DURABLE TYPE" for the fanout queue), then
         "READY-FOR-RESTART"; the driver checks the broker's queue list,
         restarts the broker (same data, same ports) and writes "RESTARTED".
         The RPC server, its client and the notifier stay up throughout.
 after   the transient control queue is gone (proof that the broker really
         restarted); a call through the pre-restart client succeeds (the
         RPC server and the reply waiter reconnected); casts work; a
         listener started now receives every notification sent before the
         restart exactly once, in order per priority, then live ones.

Every check of both modes runs; failures are collected and reported
together at the end.
"""
import select
import sys
import threading
import time

import _common as c

c.watchdog(250)  # the Go side allows 270 s
if len(sys.argv) != 2:
    c.die(__doc__)
URL = sys.argv[1]
rec = c.setup_logging()

import logging  # noqa: E402

import amqp  # noqa: E402
import oslo_messaging as om  # noqa: E402
from oslo_messaging import transport as om_transport  # noqa: E402
from oslo_messaging._drivers import amqp as om_amqp  # noqa: E402

# "Reconnected to AMQP server" is logged at INFO.
for name in ('oslo.messaging._drivers.impl_rabbit', 'oslo_messaging._drivers.impl_rabbit'):
    logging.getLogger(name).setLevel(logging.INFO)

MODES = [
    ('durable', {'amqp_durable_queues': True}),
    ('quorum', {'rabbit_quorum_queue': True}),
]
# Reconnect quickly once the broker is back: oslo's backoff (1 s, +2 s per
# try, up to 30 s) would otherwise add up to 30 s to RabbitMQ's restart.
RECONNECT = {'rabbit_interval_max': 2}
# The notifications sent before the restart: (seq, priority), interleaved.
PATTERN = ['info', 'error', 'info', 'warn', 'info', 'error', 'info', 'info',
           'warn', 'error', 'info', 'error', 'info', 'warn', 'info']
BIG = 7  # this one carries a body bigger than frame_max (131072)
PRIORITIES = sorted(set(PATTERN))
LIVE = 3  # live notifications after the restart, per priority

failures = []
out_lock = threading.Lock()


def fail(msg):
    with out_lock:
        sys.stderr.write('FAILED CHECK: %s\n' % msg)
        sys.stderr.flush()
        failures.append(msg)


def result(key, value):
    """c.result, safe to call from several threads (print writes the line
    and its newline separately)."""
    with out_lock:
        sys.stdout.write('result %s %s\n' % (key, value))
        sys.stdout.flush()


def in_parallel(fns, timeout=120):
    """Run fns in threads; an exception in one is a failed check."""
    def run(fn):
        try:
            fn()
        except Exception as e:
            fail('%s: %r' % (getattr(fn, '__name__', fn), e))
    threads = [threading.Thread(target=run, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0, deadline - time.monotonic()))
        if t.is_alive():
            c.die('a parallel step is still running after %ss' % timeout)


def soft_wait(cond, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def make_conf(exchange, **rabbit):
    conf = c.oslo_conf()
    # amqp_durable_queues lives in amqp_opts, which the driver registers
    # only when it loads; control_exchange is a transport option.
    conf.register_opts(om_amqp.amqp_opts, group='oslo_messaging_rabbit')
    conf.register_opts(om_transport._transport_opts)
    conf.set_override('control_exchange', exchange)
    for k, v in dict(RECONNECT, **rabbit).items():
        conf.set_override(k, v, group='oslo_messaging_rabbit')
    return conf


def connect():
    u = c.URL(URL)
    conn = amqp.Connection(u.hostport(), userid=u.user, password=u.password,
                           virtual_host=u.vhost, connect_timeout=10)
    conn.connect()
    return conn


def passive(queue):
    """(message_count, consumer_count), or None if the queue does not exist."""
    conn = connect()
    try:
        ok = conn.channel().queue_declare(queue, passive=True)
        return ok.message_count, ok.consumer_count
    except amqp.exceptions.NotFound:
        return None
    finally:
        try:
            conn.close()
        except Exception:
            pass


def expect_inequivalent(what, name, declare, arg):
    """declare(channel) must fail with 406 naming arg."""
    conn = connect()
    try:
        try:
            declare(conn.channel())
        except amqp.exceptions.PreconditionFailed as e:
            if "inequivalent arg '%s'" % arg not in str(e):
                fail('%s %s: 406 but not about %r: %s' % (what, name, arg, e))
            return
        except Exception as e:
            fail('%s %s: want 406 inequivalent arg %r, got %r' % (what, name, arg, e))
            return
        fail('%s %s: a redeclare with a different %r was accepted: it is not what oslo declared'
             % (what, name, arg))
    finally:
        try:
            conn.close()
        except Exception:
            pass


class RPC(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.casts = []

    def echo(self, ctxt, x):
        return x

    def note(self, ctxt, x):
        with self.lock:
            self.casts.append(x)

    def seen(self):
        with self.lock:
            return list(self.casts)


class Notes(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []
        for p in PRIORITIES:
            setattr(self, p, self._recorder(p))

    def _recorder(self, priority):
        def record(ctxt, publisher_id, event_type, payload, metadata):
            with self.lock:
                self.got.append((priority, event_type, payload))
        return record

    def seen(self):
        with self.lock:
            return list(self.got)


def payload(mode, seq):
    p = {'mode': mode, 'seq': seq, 'text': 'ünïcödé'}
    if seq == BIG:
        p['blob'] = 'ü' * 100000  # 200 KB of UTF-8
    return p


class Mode(object):
    def __init__(self, name, opts, uid):
        self.name = name
        self.exchange = 'amqpit_%s_%s' % (name[:3], uid)
        self.rtopic = 'amqpit_%s_rpc_%s' % (name[:3], uid)
        self.ntopic = 'amqpit_%s_ntf_%s' % (name[:3], uid)
        self.quorum = bool(opts.get('rabbit_quorum_queue'))
        self.conf = make_conf(self.exchange, **opts)
        self.transport = om.get_rpc_transport(self.conf, url=URL)
        self.ntransport = om.get_notification_transport(self.conf, url=URL)
        self.rpc = RPC()
        self.server = om.get_rpc_server(self.transport, om.Target(topic=self.rtopic, server='srv1'),
                                        [self.rpc], executor='threading')
        self.client = om.get_rpc_client(self.transport, om.Target(topic=self.rtopic), timeout=30)
        self.notifier = om.Notifier(self.ntransport, driver='messagingv2', topics=[self.ntopic],
                                    publisher_id='amqpit.%s' % name)
        self.listener = None
        self.notes = Notes()

    def fail(self, msg):
        fail('%s: %s' % (self.name, msg))

    def result(self, key, value):
        result('%s_%s' % (self.name, key), value)

    def nqueue(self, priority):
        return '%s.%s' % (self.ntopic, priority)

    def durable_queues(self):
        return [self.rtopic, self.rtopic + '.srv1'] + [self.nqueue(p) for p in PRIORITIES]

    def queue_args(self):
        return {'x-queue-type': 'quorum'} if self.quorum else {}

    # -- before the restart ------------------------------------------------

    def before(self):
        self.server.start()
        for i in range(5):
            if self.client.call({}, 'echo', x=i) != i:
                self.fail('call %d before the restart' % i)
        if self.client.prepare(server='srv1').call({}, 'echo', x='srv1') != 'srv1':
            self.fail('call to srv1 before the restart')
        for i in range(5):
            self.client.cast({}, 'note', x=i)
        if not soft_wait(lambda: len(self.rpc.seen()) >= 5, 15):
            self.fail('casts before the restart: got %r' % self.rpc.seen())
        for seq, prio in enumerate(PATTERN):
            getattr(self.notifier, prio)({'request_id': 'req-%d' % seq},
                                         'amqpit.durable.%s' % prio, payload(self.name, seq))
        self.result('notified', len(PATTERN))

    def check_wire(self):
        # The backlog is there before the restart.
        for p in PRIORITIES:
            want = PATTERN.count(p)
            got = passive(self.nqueue(p))
            if got != (want, 0):
                self.fail('before the restart %s holds (messages, consumers) %r, want (%d, 0)'
                          % (self.nqueue(p), got, want))
        # oslo declared them durable (and quorum): a redeclare that differs
        # is refused. (A matching redeclare is what oslo itself does.)
        for q in self.durable_queues():
            expect_inequivalent(self.name + ' queue', q, lambda ch: ch.queue_declare(
                q, durable=False, auto_delete=False, arguments=self.queue_args()), 'durable')
            if self.quorum:
                expect_inequivalent(self.name + ' queue', q, lambda ch: ch.queue_declare(
                    q, durable=True, auto_delete=False, arguments={'x-queue-type': 'classic'}), 'x-queue-type')
        expect_inequivalent(self.name + ' exchange', self.exchange, lambda ch: ch.exchange_declare(
            self.exchange, 'topic', durable=False, auto_delete=False), 'durable')

    def expectations(self):
        kind = 'quorum' if self.quorum else 'classic'
        for q in self.durable_queues():
            print('expect %s true %s' % (q, kind), flush=True)
        # The fanout and reply queues stay transient and classic.
        print('expect-prefix %s_fanout_ false classic' % self.rtopic, flush=True)
        reply_q = getattr(self.transport._driver, '_reply_q', None)
        if reply_q:
            print('expect %s false classic' % reply_q, flush=True)
        else:
            self.fail('no reply queue after calls (oslo internals changed?)')

    # -- after the restart -------------------------------------------------

    def after_rpc(self, t_restarted):
        # The client and server from before the restart: the server's
        # listener and the reply waiter reconnected by themselves.
        try:
            x = self.client.call({}, 'echo', x='after')
        except Exception as e:
            self.fail('first call after the restart: %r' % e)
            return
        if x != 'after':
            self.fail('first call after the restart returned %r' % x)
        self.result('first_call_after_restart_s', '%.2f' % (time.monotonic() - t_restarted))
        ok = 0
        for i in range(10):
            try:
                if self.client.call({}, 'echo', x=i) == i:
                    ok += 1
            except Exception as e:
                self.fail('call %d after the restart: %r' % (i, e))
        try:
            if self.client.prepare(server='srv1').call({}, 'echo', x='srv1') == 'srv1':
                ok += 1
        except Exception as e:
            self.fail('call to srv1 after the restart: %r' % e)
        self.result('calls_after_restart', ok)
        for i in range(5, 10):
            self.client.cast({}, 'note', x=i)
        if not soft_wait(lambda: len(self.rpc.seen()) >= 10, 15):
            self.fail('casts after the restart: got %r' % self.rpc.seen())
        time.sleep(0.3)
        if sorted(self.rpc.seen()) != list(range(10)):
            self.fail('casts, each once: got %r' % sorted(self.rpc.seen()))
        self.result('casts', len(self.rpc.seen()))

    def after_backlog(self):
        backlog = {p: passive(self.nqueue(p)) for p in PRIORITIES}
        self.result('backlog_after_restart', ','.join(
            '%s=%s' % (p, backlog[p][0] if backlog[p] else 'missing') for p in PRIORITIES))
        return backlog

    def start_listener(self):
        self.listener = om.get_notification_listener(
            self.ntransport, [om.Target(topic=self.ntopic)], [self.notes], executor='threading')
        self.listener.start()

    def after_notifications(self):
        n = len(PATTERN)
        got_all = soft_wait(lambda: len(self.notes.seen()) >= n, 20)
        time.sleep(1.0)  # let any duplicate arrive
        got = [g for g in self.notes.seen() if g[1].startswith('amqpit.durable.')]
        seqs = [g[2]['seq'] for g in got]
        self.result('received', len(got))
        self.result('duplicates', len(seqs) - len(set(seqs)))
        if not got_all:
            self.fail('listener started after the restart got %d of the %d notifications sent '
                      'before it: %r' % (len(got), n, seqs))
        for p in PRIORITIES:
            want = [s for s, q in enumerate(PATTERN) if q == p]
            have = [g[2]['seq'] for g in got if g[0] == p]
            if have != want:
                self.fail('%s notifications after the restart: seq %r, want %r '
                          '(each once, in order)' % (p, have, want))
        for prio, event_type, pl in got:
            want = payload(self.name, pl.get('seq'))
            if pl != want or event_type != 'amqpit.durable.%s' % prio:
                self.fail('notification seq %r: %s %r, payload differs (%d chars)'
                          % (pl.get('seq'), prio, event_type, len(repr(pl))))
        # And the listener keeps working for new notifications.
        for i in range(LIVE):
            for p in PRIORITIES:
                getattr(self.notifier, p)({}, 'amqpit.live.%s' % p, {'live': i, 'p': p})
        want = LIVE * len(PRIORITIES)
        live = lambda: [g for g in self.notes.seen() if g[1].startswith('amqpit.live.')]
        soft_wait(lambda: len(live()) >= want, 20)
        time.sleep(0.3)
        self.result('live_received', len(live()))
        if sorted((g[0], g[2]['live']) for g in live()) != sorted(
                (p, i) for i in range(LIVE) for p in PRIORITIES):
            self.fail('live notifications after the restart: %r' % [(g[0], g[2]) for g in live()])

    def after(self, t_restarted):
        self.after_rpc(t_restarted)
        self.start_listener()
        self.after_notifications()

    def stoppers(self):
        # oslo's stop() blocks until its poll loop notices (1-4 s each).
        return ([self.listener.stop] if self.listener else []) + [self.server.stop]

    def wait(self):
        if self.listener:
            self.listener.wait()
        self.server.wait()

    def delete_durable(self, ch):
        # Durable leftovers would come back at every later restart. (The
        # consumers are stopped first: deleting a consumed queue makes oslo
        # reconnect and declare it again.)
        for q in self.durable_queues():
            ch.queue_delete(q)
        ch.exchange_delete(self.exchange)


uid = c.uid()
modes = [Mode(name, opts, uid) for name, opts in MODES]

# The transient control: oslo's defaults, non-durable everything.
tr_exchange, tr_topic = 'amqpit_tr_%s' % uid, 'amqpit_tr_ntf_%s' % uid
tr_conf = make_conf(tr_exchange)
tr_transport = om.get_notification_transport(tr_conf, url=URL)
tr_notifier = om.Notifier(tr_transport, driver='messagingv2', topics=[tr_topic],
                          publisher_id='amqpit.transient')
tr_queue = tr_topic + '.info'

t_start = time.monotonic()
for m in modes:
    m.before()
for i in range(2):
    tr_notifier.info({}, 'amqpit.transient', {'n': i})
got = passive(tr_queue)
if got != (2, 0):
    fail('transient control %s holds %r before the restart, want (2, 0)' % (tr_queue, got))
for m in modes:
    m.check_wire()
    m.expectations()
print('expect %s false classic' % tr_queue, flush=True)

c.result('before_s', '%.2f' % (time.monotonic() - t_start))
print('READY-FOR-RESTART', flush=True)
r, _, _ = select.select([sys.stdin], [], [], 200)
c.check(r, 'no RESTARTED from the driver within 200s')
line = sys.stdin.readline().strip()
c.check(line == 'RESTARTED', 'driver said %r, want RESTARTED' % line)
t_restarted = time.monotonic()

# A non-durable queue does not survive a restart (on RabbitMQ; and
# substrate keeps transient entities in memory only).
got = passive(tr_queue)
if got is not None:
    fail('transient control %s still exists after the restart with %r: '
         'was the broker really restarted?' % (tr_queue, got))
for m in modes:
    m.after_backlog()
# Both modes at once: RPC across the restart, then the backlog.
in_parallel([lambda m=m: m.after(t_restarted) for m in modes])
c.result('after_s', '%.2f' % (time.monotonic() - t_restarted))

c.result('forced_errors', len(rec.matching('CONNECTION_FORCED')))
c.result('reconnected', len(rec.matching('Reconnected to AMQP server')))
# Stop every consumer, remove the durable queues and exchanges. The
# transports are not cleaned up: transport.cleanup() takes 5 s each here and
# the process ends at once anyway.
t = time.monotonic()
in_parallel([f for m in modes for f in m.stoppers()])
for m in modes:
    m.wait()
try:
    conn = connect()
    for m in modes:
        m.delete_durable(conn.channel())
    conn.close()
except Exception as e:
    fail('deleting the durable queues and exchanges: %r' % e)
c.result('close_s', '%.2f' % (time.monotonic() - t))
if failures:
    c.die('%d failed checks:\n  %s' % (len(failures), '\n  '.join(failures)))
c.finish()
