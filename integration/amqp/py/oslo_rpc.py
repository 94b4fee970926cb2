#!/usr/bin/python3
"""oslo.messaging RPC over the rabbit driver, one scenario per run.

usage: oslo_rpc.py URL SCENARIO
  call          call returns values (small, unicode, nested, 300 KB), context
                reaches the server, per-server routing, remote exceptions
  cast          casts reach a server exactly once; two servers on one topic
                share the topic queue
  fanout        a fanout cast reaches both servers once each; fanout queues
                and the auto-delete fanout exchange go when the servers stop
  timeout       a call with no server raises MessagingTimeout after its timeout
  undeliverable at_least_once (mandatory) call/cast with no queue raises
                MessageUndeliverable well before the timeout
  gone-caller   the server's reply to a caller whose reply queue is gone is
                returned (mandatory, direct_mandatory_flag) and retried, while
                the server keeps serving other calls
"""
import sys
import threading
import time

import _common as c

c.watchdog(55)
if len(sys.argv) != 3:
    c.die(__doc__)
URL, SCENARIO = sys.argv[1], sys.argv[2]
rec = c.setup_logging()

import oslo_messaging as om  # noqa: E402


class Endpoint(object):
    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.casts = []

    def echo(self, ctxt, x):
        return x

    def whoami(self, ctxt):
        return self.name

    def context(self, ctxt):
        return ctxt

    def boom(self, ctxt, text):
        raise ValueError(text)

    def note(self, ctxt, x):
        with self.lock:
            self.casts.append(x)

    slow_done = None  # time.time() when slow() last returned

    def slow(self, ctxt, s):
        time.sleep(s)
        self.slow_done = time.time()
        return s

    def seen(self):
        with self.lock:
            return list(self.casts)


def rpc_server(transport, topic, name, ep=None):
    ep = ep or Endpoint(name)
    srv = om.get_rpc_server(transport, om.Target(topic=topic, server=name),
                            [ep], executor='threading')
    srv.start()
    return srv, ep


def stop(*servers):
    for s in servers:
        s.stop()
    for s in servers:
        s.wait()


def raw_channel():
    """A plain py-amqp connection for broker-side probes."""
    import amqp
    u = c.URL(URL)
    conn = amqp.Connection(u.hostport(), userid=u.user, password=u.password,
                           virtual_host=u.vhost, connect_timeout=10)
    conn.connect()
    return conn


def consumers(conn, queue):
    """consumer_count of queue, by a passive queue.declare."""
    ch = conn.channel()
    try:
        return ch.queue_declare(queue, passive=True).consumer_count
    finally:
        ch.close()


def exists(conn, kind, name):
    """Whether exchange/queue name exists (passive declare; 404 closes the
    channel, so each probe uses its own)."""
    import amqp
    ch = conn.channel()
    try:
        if kind == 'queue':
            ch.queue_declare(name, passive=True)
        else:
            ch.exchange_declare(name, 'fanout', passive=True)
    except amqp.exceptions.NotFound:
        return False
    ch.close()
    return True


conf = c.oslo_conf(kombu_missing_consumer_retry_timeout=2)
transport = om.get_rpc_transport(conf, url=URL)
topic = 'amqpit_rpc_%s' % c.uid()


def scenario_call():
    srv, ep = rpc_server(transport, topic, 'srv1')
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=15)
    values = [42, 'hello', None, [True, False, 1.5, -7],
              {'a': [1, 2, {'b': None}], 'u': 'ünïcödé ✓ 日本'},
              # > frame_max (131072): multi-frame bodies both ways
              'x' * 300000]
    for v in values:
        got = client.call({}, 'echo', x=v)
        c.check(got == v, 'echo(%r...) returned %r...' % (str(v)[:40], str(got)[:40]))
    ctx = client.call({'user': 'u1', 'project': 'p1'}, 'context')
    c.check(isinstance(ctx, dict) and ctx.get('user') == 'u1' and ctx.get('project') == 'p1',
            'context did not reach the server: %r' % (ctx,))
    got = client.prepare(server='srv1').call({}, 'whoami')
    c.check(got == 'srv1', 'per-server call answered by %r' % (got,))
    try:
        client.call({}, 'boom', text='kaboom-123')
        c.die('remote ValueError was not raised')
    except ValueError as e:
        c.check('kaboom-123' in str(e), 'remote exception text lost: %r' % (e,))
    t0 = time.monotonic()
    n = 30
    for i in range(n):
        c.check(client.call({}, 'echo', x=i) == i, 'call %d' % i)
    per_call = (time.monotonic() - t0) / n
    c.result('call_ms', '%.1f' % (per_call * 1000))
    c.check(per_call < 0.5, 'calls are slow: %.3fs each' % per_call)
    stop(srv)


def scenario_cast():
    srv1, ep1 = rpc_server(transport, topic, 'srv1')
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=15)
    n = 20
    for i in range(n):
        client.cast({}, 'note', x=i)
    c.wait_for(lambda: len(ep1.seen()) >= n, 10, '%d casts at srv1' % n)
    time.sleep(0.5)  # let any duplicate arrive
    c.check(sorted(ep1.seen()) == list(range(n)), 'srv1 got %r' % ep1.seen())

    # A second server on the same topic shares the topic queue: each cast
    # goes to exactly one of them. Wait until both consume so that the
    # broker has both to choose from.
    srv2, ep2 = rpc_server(transport, topic, 'srv2')
    conn = raw_channel()
    c.wait_for(lambda: consumers(conn, topic) == 2, 10, '2 consumers on queue %s' % topic, 0.1)
    base = len(ep1.seen())
    for i in range(100, 100 + n):
        client.cast({}, 'note', x=i)
    c.wait_for(lambda: len(ep1.seen()) - base + len(ep2.seen()) >= n, 10, 'second batch of casts')
    time.sleep(0.5)
    got1, got2 = ep1.seen()[base:], ep2.seen()
    c.check(sorted(got1 + got2) == list(range(100, 100 + n)),
            'shared queue delivered %r + %r' % (got1, got2))
    c.check(got1 and got2, 'one server got every cast: srv1 %d, srv2 %d' % (len(got1), len(got2)))
    c.result('srv1', len(got1))
    c.result('srv2', len(got2))
    conn.close()
    stop(srv1, srv2)


def scenario_fanout():
    srv1, ep1 = rpc_server(transport, topic, 'srv1')
    srv2, ep2 = rpc_server(transport, topic, 'srv2')
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=15)
    tokens = ['f1', 'f2', 'f3']
    for tok in tokens:
        client.prepare(fanout=True).cast({}, 'note', x=tok)
    c.wait_for(lambda: len(ep1.seen()) >= 3 and len(ep2.seen()) >= 3, 10,
               'fanout at both servers (srv1 %r, srv2 %r)' % (ep1.casts, ep2.casts))
    # A plain cast goes to one server only.
    client.cast({}, 'note', x='direct')
    c.wait_for(lambda: 'direct' in ep1.seen() + ep2.seen(), 10, 'plain cast')
    time.sleep(0.5)
    s1, s2 = ep1.seen(), ep2.seen()
    c.check(sorted(x for x in s1 if x != 'direct') == tokens, 'srv1 got %r' % s1)
    c.check(sorted(x for x in s2 if x != 'direct') == tokens, 'srv2 got %r' % s2)
    c.check((s1 + s2).count('direct') == 1, 'plain cast delivered %d times' % (s1 + s2).count('direct'))
    c.result('srv1', len(s1))
    c.result('srv2', len(s2))

    conn = raw_channel()
    c.check(exists(conn, 'exchange', topic + '_fanout'), 'no exchange %s_fanout' % topic)
    # On a clean stop oslo deletes the fanout queue it still consumes from;
    # RabbitMQ sends basic.cancel after queue.delete-ok, which py-amqp logs
    # as "Received method (60, 30) during closing channel 1" and ignores.
    stop(srv1, srv2)
    # With the last binding gone the auto-delete fanout exchange goes too.
    c.wait_for(lambda: not exists(conn, 'exchange', topic + '_fanout'), 10,
               'auto-delete exchange %s_fanout to go' % topic, 0.2)
    c.check(exists(conn, 'queue', topic), 'the topic queue %s went away too' % topic)
    conn.close()


def scenario_timeout():
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=2)
    t0 = time.monotonic()
    try:
        client.call({}, 'echo', x=1)
        c.die('a call with no server returned')
    except om.MessagingTimeout:
        pass
    elapsed = time.monotonic() - t0
    c.result('elapsed', '%.2f' % elapsed)
    c.check(1.9 <= elapsed <= 6, 'MessagingTimeout after %.2fs, want about 2s' % elapsed)


def scenario_undeliverable():
    opts = om.TransportOptions(at_least_once=True)
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=15,
                               transport_options=opts)
    # No queue is bound to the topic: with mandatory=1 RabbitMQ sends
    # basic.return 312 NO_ROUTE before the confirm, and py-amqp raises it
    # out of the confirm wait.
    t0 = time.monotonic()
    try:
        client.call({}, 'echo', x=1)
        c.die('call with no server returned')
    except om.MessageUndeliverable:
        pass
    except om.MessagingTimeout:
        c.die('got MessagingTimeout: the broker did not return the mandatory message')
    elapsed = time.monotonic() - t0
    c.result('call_elapsed', '%.2f' % elapsed)
    c.check(elapsed < 5, 'MessageUndeliverable only after %.2fs' % elapsed)
    try:
        client.cast({}, 'note', x=1)
        c.die('mandatory cast with no server did not raise')
    except om.MessageUndeliverable:
        pass
    # Control: without at_least_once the same call just times out.
    plain = om.get_rpc_client(transport, om.Target(topic=topic), timeout=1)
    try:
        plain.call({}, 'echo', x=1)
        c.die('plain call with no server returned')
    except om.MessagingTimeout:
        pass
    # And with a server, the mandatory call is routable and works.
    srv, ep = rpc_server(transport, topic, 'srv1')
    c.check(client.call({}, 'echo', x=7) == 7, 'mandatory call with a server')
    client.cast({}, 'note', x=8)
    c.wait_for(lambda: ep.seen() == [8], 10, 'mandatory cast at the server')
    stop(srv)


def scenario_gone_caller():
    srv, ep = rpc_server(transport, topic, 'srv1')
    # The caller has its own transport, hence its own reply queue.
    caller_t = om.get_rpc_transport(conf, url=URL)
    caller = om.get_rpc_client(caller_t, om.Target(topic=topic), timeout=1)
    try:
        caller.call({}, 'slow', s=5)
        c.die('slow call returned before its timeout')
    except om.MessagingTimeout:
        pass
    reply_q = caller_t._driver._reply_q
    c.check(reply_q and reply_q.startswith('reply_'), 'caller reply queue %r' % (reply_q,))
    # The caller goes away: its connections close and its reply queue is
    # deleted (as x-expires would, later) before the server replies.
    caller_t.cleanup()
    conn = raw_channel()
    ch = conn.channel()
    ch.queue_delete(reply_q)
    ch.close()
    c.check(ep.slow_done is None, 'the server replied before the reply queue was deleted; '
            'the host is too slow for this scenario')

    # The server's reply (mandatory, direct_mandatory_flag=True) comes back
    # as basic.return 312, so oslo retries it every 0.25 s for
    # kombu_missing_consumer_retry_timeout=2 s, in an executor thread;
    # other callers are still served meanwhile.
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=10)
    c.wait_for(lambda: ep.slow_done, 10, 'the slow method to finish')
    time.sleep(0.5)
    t0 = time.monotonic()
    c.check(client.call({}, 'echo', x='still here') == 'still here', 'call during retry')
    took = time.monotonic() - t0
    c.result('call_during_retry_s', '%.2f' % took)
    c.check(took < 3, 'call while the server retries took %.2fs' % took)
    abandoned = c.wait_for(lambda: rec.matching('failed to send', 'missing queue', reply_q), 12,
                           'the server to abandon the reply to %s' % reply_q)
    c.check(len(abandoned) == 1, 'abandoned %d times' % len(abandoned))
    # Only returns make oslo retry; had the broker dropped or delivered the
    # reply, nothing would have been logged.
    retried = abandoned[0][3] - ep.slow_done
    c.result('retried_for_s', '%.2f' % retried)
    c.check(1.5 <= retried <= 6, 'reply retried for %.2fs, want about 2s' % retried)
    c.check(client.call({}, 'echo', x=2) == 2, 'call after the reply was abandoned')
    conn.close()
    stop(srv)


scenarios = {
    'call': scenario_call,
    'cast': scenario_cast,
    'fanout': scenario_fanout,
    'timeout': scenario_timeout,
    'undeliverable': scenario_undeliverable,
    'gone-caller': scenario_gone_caller,
}
if SCENARIO not in scenarios:
    c.die('unknown scenario %r; one of %s' % (SCENARIO, ', '.join(scenarios)))
scenarios[SCENARIO]()
transport.cleanup()
c.finish()
