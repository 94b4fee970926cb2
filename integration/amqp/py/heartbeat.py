#!/usr/bin/python3
"""Heartbeat negotiation and keep-alive with a short heartbeat.

usage: heartbeat.py URL CLIENT [HEARTBEAT [IDLE]]
  CLIENT kombu   kombu/py-amqp asks for HEARTBEAT (default 2) s; the broker
                 proposes more, so min() is negotiated. Idle for IDLE
                 (default 8) s, only draining and heartbeat_check()ing: the
                 broker's heartbeat frames arrive, the connection stays up,
                 then a publish/get round trip works.
  CLIENT pika    the same with pika's BlockingConnection and connection.sleep.
  CLIENT silent  py-amqp negotiates HEARTBEAT and then sends nothing at all:
                 the broker must keep the connection past one interval and
                 close it after a few (reported as closed_after_s).
"""
import select
import socket
import sys
import time

import _common as c

c.watchdog(50)
if len(sys.argv) < 3:
    c.die(__doc__)
url = c.URL(sys.argv[1])
CLIENT = sys.argv[2]
HB = int(sys.argv[3]) if len(sys.argv) > 3 else 2
IDLE = float(sys.argv[4]) if len(sys.argv) > 4 else 8
c.setup_logging()
u = c.uid()


def kombu_client():
    import kombu
    conn = kombu.Connection(url.amqp_url(), heartbeat=HB, connect_timeout=10)
    conn.connect()
    raw = conn.connection  # the py-amqp Connection
    c.result('server_proposed', raw.server_heartbeat)
    c.result('negotiated', raw.heartbeat)
    c.check(raw.heartbeat == HB, 'negotiated heartbeat %r, asked for %d (server proposed %r)' % (
        raw.heartbeat, HB, raw.server_heartbeat))
    q = kombu.Queue('amqpit_hb_%s' % u, durable=False, auto_delete=False)
    ch = conn.channel()
    bq = q(ch)
    bq.declare()
    frames0 = raw.bytes_recv  # py-amqp counts frames here, not bytes
    t_end = time.monotonic() + IDLE
    while time.monotonic() < t_end:
        try:
            conn.drain_events(timeout=0.25)
        except socket.timeout:
            pass
        # Sends our heartbeat when due; raises ConnectionForced if nothing
        # came from the broker for 2 x heartbeat.
        conn.heartbeat_check()
    frames = raw.bytes_recv - frames0
    c.result('frames_while_idle', frames)
    # The broker sends a heartbeat when it has sent nothing for HB/2
    # (RabbitMQ: every 1 s for HB=2): at least one per HB is required.
    c.check(frames >= IDLE / HB - 1, 'only %d frames from the broker in %.0fs idle' % (frames, IDLE))
    kombu.Producer(ch).publish({'after': 'idle'}, routing_key=q.name, serializer='json')
    m = c.wait_for(lambda: bq.get(no_ack=True), 10, 'message after idling')
    c.check(m.payload == {'after': 'idle'}, 'payload %r' % (m.payload,))
    bq.delete()
    conn.release()


def pika_client():
    import pika
    params = pika.ConnectionParameters(
        host=url.host, port=url.port, virtual_host=url.vhost,
        credentials=pika.PlainCredentials(url.user, url.password),
        heartbeat=HB, socket_timeout=10, connection_attempts=1)
    conn = pika.BlockingConnection(params)
    c.result('negotiated', conn._impl.params.heartbeat)
    c.check(conn._impl.params.heartbeat == HB, 'negotiated %r' % conn._impl.params.heartbeat)
    checker = conn._impl._heartbeat_checker
    c.check(checker is not None, 'pika runs no heartbeat checker')
    ch = conn.channel()
    q = 'amqpit_hbp_%s' % u
    ch.queue_declare(q)
    # sleep() keeps processing I/O: pika sends heartbeats every HB/2 and
    # closes the connection if nothing arrives for HB + 5 s.
    conn.sleep(IDLE)
    c.check(conn.is_open, 'connection closed while idle')
    c.result('heartbeats_received', checker._heartbeat_frames_received)
    c.result('heartbeats_sent', checker._heartbeat_frames_sent)
    c.check(checker._heartbeat_frames_received >= IDLE / HB - 1,
            'only %d heartbeats from the broker in %.0fs' % (checker._heartbeat_frames_received, IDLE))
    ch.basic_publish('', q, b'after idle')
    method, _, body = ch.basic_get(q, auto_ack=True)
    c.check(body == b'after idle', 'got %r' % body)
    ch.queue_delete(q)
    conn.close()


def silent_client():
    import amqp
    conn = amqp.Connection(url.hostport(), userid=url.user, password=url.password,
                           virtual_host=url.vhost, heartbeat=HB, connect_timeout=10)
    conn.connect()
    c.check(conn.heartbeat == HB, 'negotiated %r' % conn.heartbeat)
    # From here on the client writes nothing. Read the socket directly to
    # see the broker's heartbeats and when it closes.
    sock = conn.transport.sock
    t0 = time.monotonic()
    hb_bytes = 0
    while True:
        left = 6 * HB + 4 - (time.monotonic() - t0)
        if left <= 0:
            c.die('broker kept a silent connection for %ds with heartbeat %d' % (6 * HB + 4, HB))
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            data = sock.recv(4096)
        except (ConnectionResetError, OSError):
            data = b''
        if not data:
            break
        hb_bytes += len(data)
    closed = time.monotonic() - t0
    c.result('closed_after_s', '%.2f' % closed)
    c.result('bytes_before_close', hb_bytes)
    # Never after a single interval of silence (amqp-openstack.md §1.4).
    c.check(closed > 1.5 * HB, 'broker closed after %.2fs of silence, heartbeat %d' % (closed, HB))


clients = {'kombu': kombu_client, 'pika': pika_client, 'silent': silent_client}
if CLIENT not in clients:
    c.die('unknown client %r; one of %s' % (CLIENT, ', '.join(clients)))
clients[CLIENT]()
c.finish()
