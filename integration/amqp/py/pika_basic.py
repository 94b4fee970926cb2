#!/usr/bin/python3
"""pika BlockingConnection: publisher confirms (and a mandatory unroutable
publish), basic_get with properties, basic_consume with acks, prefetch,
nack/requeue/reject, and a 1 MiB body.

usage: pika_basic.py URL
"""
import sys
import time

import _common as c

c.watchdog(50)
if len(sys.argv) != 2:
    c.die(__doc__)
url = c.URL(sys.argv[1])
c.setup_logging()

import pika  # noqa: E402
import pika.exceptions  # noqa: E402

params = pika.ConnectionParameters(
    host=url.host, port=url.port, virtual_host=url.vhost,
    credentials=pika.PlainCredentials(url.user, url.password),
    heartbeat=0, socket_timeout=10, blocked_connection_timeout=10,
    connection_attempts=1)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()

u = c.uid()
ex, q = 'amqpit_px_%s' % u, 'amqpit_pq_%s' % u
ch.exchange_declare(ex, exchange_type='direct', durable=False, auto_delete=False)
ok = ch.queue_declare(q, durable=False, exclusive=False, auto_delete=False)
c.check(ok.method.queue == q and ok.method.message_count == 0, 'queue.declare-ok %r' % (ok.method,))
ch.queue_bind(q, ex, routing_key='rk')


def props(i):
    return pika.BasicProperties(
        content_type='text/plain', content_encoding='utf-8',
        headers={'seq': i, 'who': 'amqpit', 'nested': {'list': [1, 'two']}},
        delivery_mode=2, priority=3, correlation_id='corr-%d' % i,
        reply_to='nobody', message_id='msg-%d' % i, timestamp=1700000000 + i,
        type='amqpit.test', app_id='amqpit')


# Publisher confirms: with confirm_delivery() basic_publish waits for the
# broker's basic.ack and raises on basic.nack.
n = 5
for i in range(n):
    ch.basic_publish(ex, 'rk', ('m%d' % i).encode(), props(i), mandatory=True)
# Mandatory and unroutable: basic.return, then the ack; pika raises.
try:
    ch.basic_publish(ex, 'nowhere', b'lost', mandatory=True)
    c.die('mandatory unroutable publish was confirmed without a return')
except pika.exceptions.UnroutableError as e:
    c.check(len(e.messages) == 1 and e.messages[0].body == b'lost',
            'returned %r' % (e.messages,))
# Not mandatory: dropped silently, still confirmed.
ch.basic_publish(ex, 'nowhere', b'dropped')

# basic_get returns the first, with every property intact.
method, p, body = ch.basic_get(q)
c.check(method is not None, 'basic_get found nothing')
c.check(body == b'm0', 'body %r' % body)
c.check(method.message_count == n - 1, 'get-ok message_count %r, want %d' % (method.message_count, n - 1))
c.check(method.exchange == ex and method.routing_key == 'rk' and not method.redelivered,
        'get-ok %r' % (method,))
want = props(0)
for attr in ('content_type', 'content_encoding', 'headers', 'delivery_mode', 'priority',
             'correlation_id', 'reply_to', 'message_id', 'timestamp', 'type', 'app_id'):
    c.check(getattr(p, attr) == getattr(want, attr),
            'property %s: got %r, want %r' % (attr, getattr(p, attr), getattr(want, attr)))
ch.basic_ack(method.delivery_tag)

# basic_consume with manual acks.
got = []
for method, p, body in ch.consume(q, auto_ack=False, inactivity_timeout=5):
    if method is None:
        c.die('consume: nothing for 5s after %r' % got)
    got.append(body)
    ch.basic_ack(method.delivery_tag)
    if len(got) == n - 1:
        break
ch.cancel()
c.check(got == [b'm1', b'm2', b'm3', b'm4'], 'consumed %r' % got)
c.check(ch.basic_get(q) == (None, None, None), 'queue not empty after acks')

# nack with requeue: redelivered; reject without requeue: gone.
ch.basic_publish(ex, 'rk', b'again')
method, _, body = ch.basic_get(q)
c.check(body == b'again' and not method.redelivered, 'first get %r %r' % (method, body))
ch.basic_nack(method.delivery_tag, requeue=True)
method, _, body = ch.basic_get(q)
c.check(body == b'again' and method.redelivered, 'after nack(requeue) %r %r' % (method, body))
ch.basic_reject(method.delivery_tag, requeue=False)
c.check(ch.basic_get(q) == (None, None, None), 'rejected message came back')

# Prefetch 1: a second message waits for the first one's ack.
ch.basic_qos(prefetch_count=1)
ch.basic_publish(ex, 'rk', b'p1')
ch.basic_publish(ex, 'rk', b'p2')
deliveries = []
tag = ch.basic_consume(q, lambda _ch, m, _p, b: deliveries.append((m.delivery_tag, b)), auto_ack=False)
deadline = time.monotonic() + 10
while not deliveries and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.2)
conn.process_data_events(time_limit=1)  # would bring p2 if prefetch were ignored
c.check([b for _, b in deliveries] == [b'p1'], 'with prefetch 1 before the ack: %r' % deliveries)
ch.basic_ack(deliveries[0][0])
while len(deliveries) < 2 and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.2)
c.check([b for _, b in deliveries] == [b'p1', b'p2'], 'after the ack: %r' % deliveries)
ch.basic_ack(deliveries[1][0])
ch.basic_cancel(tag)

# A 1 MiB body crosses many frames (frame_max 131072) both ways.
big = bytes(range(256)) * 4096
ch.basic_publish(ex, 'rk', big)
method, _, body = ch.basic_get(q, auto_ack=True)
c.check(body == big, 'big body: %d bytes back, equal=%s' % (len(body or b''), body == big))

ok = ch.queue_declare(q, passive=True)
c.check(ok.method.message_count == 0 and ok.method.consumer_count == 0,
        'at the end %r' % (ok.method,))
ch.queue_delete(q)
ch.exchange_delete(ex)
conn.close()
c.finish()
