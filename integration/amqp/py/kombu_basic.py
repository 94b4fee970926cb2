#!/usr/bin/python3
"""kombu (over py-amqp) on a direct exchange: publish, basic.get, consume,
ack, requeue and redelivery, and an empty basic.get.

usage: kombu_basic.py URL
"""
import socket
import sys

import _common as c

c.watchdog(50)
if len(sys.argv) != 2:
    c.die(__doc__)
url = c.URL(sys.argv[1])
c.setup_logging()

import kombu  # noqa: E402

u = c.uid()
conn = kombu.Connection(url.amqp_url(), heartbeat=0, connect_timeout=10)
conn.connect()
c.check(conn.connected, 'kombu did not connect')
ex = kombu.Exchange('amqpit_kx_%s' % u, type='direct', durable=False, auto_delete=False)
q = kombu.Queue('amqpit_kq_%s' % u, exchange=ex, routing_key='rk', durable=False,
                auto_delete=False)
ch = conn.channel()
bq = q(ch)
bq.declare()

producer = kombu.Producer(ch, exchange=ex, serializer='json')
n = 5
for i in range(n):
    producer.publish({'i': i, 'text': 'ünïcödé'}, routing_key='rk',
                     headers={'seq': i, 'who': 'amqpit'})
# Not bound: dropped by the broker (not mandatory), must not show up.
producer.publish({'i': -1}, routing_key='nowhere')

# basic.get
m = c.wait_for(lambda: bq.get(no_ack=False), 10, 'basic.get of the first message')
c.check(m.payload == {'i': 0, 'text': 'ünïcödé'}, 'get payload %r' % (m.payload,))
c.check(m.headers.get('seq') == 0 and m.headers.get('who') == 'amqpit', 'headers %r' % (m.headers,))
c.check(m.content_type == 'application/json', 'content_type %r' % m.content_type)
c.check(m.delivery_info['routing_key'] == 'rk', 'delivery_info %r' % (m.delivery_info,))
c.check(m.delivery_info['exchange'] == ex.name, 'delivery_info %r' % (m.delivery_info,))
c.check(not m.delivery_info['redelivered'], 'first get is marked redelivered')
m.ack()

# basic.consume with manual acks
got = []


def on_message(body, message):
    got.append((body['i'], message.headers.get('seq')))
    message.ack()


with kombu.Consumer(ch, queues=[q], callbacks=[on_message], no_ack=False, accept=['json']):
    def drained():
        try:
            conn.drain_events(timeout=0.5)
        except socket.timeout:
            pass
        return len(got) >= n - 1
    c.wait_for(drained, 10, 'consumed messages (got %r)' % got, interval=0)
c.check(got == [(i, i) for i in range(1, n)], 'consumed %r' % got)

# Everything was acked: the queue is empty, so basic.get-empty gives None.
c.check(bq.get() is None, 'queue not empty after acking everything')

# requeue: the next get redelivers it, marked redelivered.
producer.publish({'i': 99}, routing_key='rk')
m = c.wait_for(lambda: bq.get(no_ack=False), 10, 'basic.get before requeue')
c.check(m.payload == {'i': 99}, 'payload %r' % (m.payload,))
m.requeue()
m = c.wait_for(lambda: bq.get(no_ack=False), 10, 'basic.get after requeue')
c.check(m.payload == {'i': 99} and m.delivery_info['redelivered'], 'redelivery %r %r' % (
    m.payload, m.delivery_info))
m.ack()
c.check(bq.get() is None, 'queue not empty at the end')

_, count, consumers = bq.queue_declare(passive=True)
c.check(count == 0 and consumers == 0, 'queue has %d messages and %d consumers' % (count, consumers))
bq.delete()
ex(ch).delete()
conn.release()
c.finish()
