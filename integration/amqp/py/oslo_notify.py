#!/usr/bin/python3
"""oslo.messaging notifications over the rabbit driver.

usage: oslo_notify.py URL SCENARIO
  priorities  a messagingv2 Notifier sends at every priority (audit,
              critical, debug, error, info, sample, warn) before any listener
              exists; one listener gets each exactly once, with its payload,
              publisher_id, event_type and context
  pools       two listeners in pool A share the notifications (each one
              delivered once to one of them), a listener in pool B gets its
              own copy of every one, and a pool-less listener its own too
"""
import sys
import threading
import time

import _common as c

c.watchdog(55)
if len(sys.argv) != 3:
    c.die(__doc__)
URL, SCENARIO = sys.argv[1], sys.argv[2]
c.setup_logging()

import oslo_messaging as om  # noqa: E402

PRIORITIES = ['audit', 'critical', 'debug', 'error', 'info', 'sample', 'warn']


class Endpoint(object):
    """Records (priority, ctxt, publisher_id, event_type, payload)."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.got = []
        for p in PRIORITIES:
            setattr(self, p, self._recorder(p))

    def _recorder(self, priority):
        def record(ctxt, publisher_id, event_type, payload, metadata):
            with self.lock:
                self.got.append((priority, ctxt, publisher_id, event_type, payload))
        return record

    def seen(self):
        with self.lock:
            return list(self.got)


def listener(transport, topic, ep, pool=None):
    lst = om.get_notification_listener(transport, [om.Target(topic=topic)], [ep],
                                       executor='threading', pool=pool)
    lst.start()
    return lst


def stop(*listeners):
    for lst in listeners:
        lst.stop()
    for lst in listeners:
        lst.wait()


def consumers(queue):
    import amqp
    u = c.URL(URL)
    conn = amqp.Connection(u.hostport(), userid=u.user, password=u.password,
                           virtual_host=u.vhost, connect_timeout=10)
    conn.connect()
    try:
        return conn.channel().queue_declare(queue, passive=True).consumer_count
    finally:
        conn.close()


conf = c.oslo_conf()
transport = om.get_notification_transport(conf, url=URL)
topic = 'amqpit_notif_%s' % c.uid()
notifier = om.Notifier(transport, driver='messagingv2', topics=[topic],
                       publisher_id='amqpit.host1')


def scenario_priorities():
    # Sent before any listener: the sender declares <topic>.<priority>
    # queues, so nothing is lost.
    for i, p in enumerate(PRIORITIES):
        getattr(notifier, p)({'request_id': 'req-%d' % i}, 'amqpit.event.%s' % p,
                             {'priority': p, 'n': i, 'text': 'ünïcödé'})
    ep = Endpoint('l1')
    lst = listener(transport, topic, ep)
    c.wait_for(lambda: len(ep.seen()) >= len(PRIORITIES), 15,
               'all %d priorities (got %r)' % (len(PRIORITIES), [g[0] for g in ep.got]))
    time.sleep(0.5)  # let any duplicate arrive
    got = ep.seen()
    c.check(sorted(g[0] for g in got) == sorted(PRIORITIES),
            'priorities received: %r' % sorted(g[0] for g in got))
    for priority, ctxt, publisher_id, event_type, payload in got:
        i = PRIORITIES.index(priority)
        c.check(payload == {'priority': priority, 'n': i, 'text': 'ünïcödé'},
                '%s payload %r' % (priority, payload))
        c.check(publisher_id == 'amqpit.host1', '%s publisher_id %r' % (priority, publisher_id))
        c.check(event_type == 'amqpit.event.%s' % priority, '%s event_type %r' % (priority, event_type))
        c.check(ctxt.get('request_id') == 'req-%d' % i, '%s ctxt %r' % (priority, ctxt))
    # And live, with the listener consuming: one more per priority.
    for p in PRIORITIES:
        getattr(notifier, p)({}, 'amqpit.live', {'live': p})
    c.wait_for(lambda: len(ep.seen()) >= 2 * len(PRIORITIES), 15, 'live notifications')
    time.sleep(0.5)
    live = sorted(g[0] for g in ep.seen() if g[3] == 'amqpit.live')
    c.check(live == sorted(PRIORITIES), 'live priorities %r' % live)
    c.result('received', len(ep.seen()))
    stop(lst)


def scenario_pools():
    a1, a2, b, plain = Endpoint('a1'), Endpoint('a2'), Endpoint('b'), Endpoint('plain')
    pool_a, pool_b = 'amqpit_poolA_%s' % c.uid(), 'amqpit_poolB_%s' % c.uid()
    lsts = [listener(transport, topic, a1, pool_a), listener(transport, topic, a2, pool_a),
            listener(transport, topic, b, pool_b), listener(transport, topic, plain)]
    # A pool's queue is named after the pool. Wait until both members of
    # pool A consume, so the broker has both to share the messages between.
    c.wait_for(lambda: consumers(pool_a) == 2, 10, '2 consumers on %s' % pool_a, 0.1)
    c.wait_for(lambda: consumers(pool_b) == 1, 10, '1 consumer on %s' % pool_b, 0.1)
    n = 20
    for i in range(n):
        notifier.info({}, 'amqpit.pool', {'i': i})
    everyone = lambda: (len(a1.seen()) + len(a2.seen()) >= n and len(b.seen()) >= n
                        and len(plain.seen()) >= n)
    c.wait_for(everyone, 15, 'notifications at every pool (a1 %d a2 %d b %d plain %d)' % (
        len(a1.got), len(a2.got), len(b.got), len(plain.got)))
    time.sleep(0.5)
    ids = lambda ep: [g[4]['i'] for g in ep.seen()]
    c.check(sorted(ids(a1) + ids(a2)) == list(range(n)),
            'pool A (shared) got %r + %r' % (ids(a1), ids(a2)))
    c.check(ids(a1) and ids(a2), 'pool A did not share: a1 %d, a2 %d' % (len(ids(a1)), len(ids(a2))))
    c.check(sorted(ids(b)) == list(range(n)), 'pool B got %r' % ids(b))
    c.check(sorted(ids(plain)) == list(range(n)), 'pool-less listener got %r' % ids(plain))
    c.result('a1', len(ids(a1)))
    c.result('a2', len(ids(a2)))
    c.result('b', len(ids(b)))
    c.result('plain', len(ids(plain)))
    stop(*lsts)


scenarios = {'priorities': scenario_priorities, 'pools': scenario_pools}
if SCENARIO not in scenarios:
    c.die('unknown scenario %r; one of %s' % (SCENARIO, ', '.join(scenarios)))
scenarios[SCENARIO]()
transport.cleanup()
c.finish()
