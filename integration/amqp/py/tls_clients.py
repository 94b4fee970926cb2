#!/usr/bin/python3
"""The OpenStack clients over AMQPS, with certificates from `substrate certs`.

usage: tls_clients.py URL CA CERT KEY SCENARIO
  URL is rabbit://USER:PASS@HOST:AMQPS_PORT/; CA the CA file the client
  trusts; CERT and KEY the client certificate and key ('-' for none).

  oslo-rpc      oslo.messaging RPC call and cast with [oslo_messaging_rabbit]
                ssl = True, ssl_ca_file, ssl_cert_file, ssl_key_file
  oslo-notify   oslo.messaging notifications (Notifier and listener), the same
                options
  kombu         kombu Connection(ssl={ca_certs, certfile, keyfile,
                cert_reqs}): publish and consume; reports the TLS version
                and the mechanisms connection.start offered
  pika          pika with SSLOptions and PlainCredentials: confirms, get
  pika-external pika with SSLOptions and ExternalCredentials (SASL EXTERNAL):
                logs in as the certificate's CN with no password
  external-refused  pika with ExternalCredentials must be refused (no
                client certificate); prints the error
  refused       pika with these files must fail to connect (a server or
                client certificate that does not verify); prints the error
"""
import ssl
import sys
import threading

import _common as c

c.watchdog(50)
if len(sys.argv) != 6:
    c.die(__doc__)
URL, CA, CERT, KEY, SCENARIO = sys.argv[1:]
if CERT == '-':
    CERT = KEY = None
url = c.URL(URL)
c.setup_logging()


def oslo_transport():
    import oslo_messaging as om
    opts = dict(ssl=True, ssl_ca_file=CA)
    if CERT:
        opts.update(ssl_cert_file=CERT, ssl_key_file=KEY)
    conf = c.oslo_conf(**opts)
    return om, om.get_rpc_transport(conf, url=URL), conf


def scenario_oslo_rpc():
    om, transport, _ = oslo_transport()

    class Endpoint(object):
        def __init__(self):
            self.casts = []
            self.lock = threading.Lock()

        def echo(self, ctxt, x):
            return x

        def note(self, ctxt, x):
            with self.lock:
                self.casts.append(x)

    topic = 'amqpit_tls_%s' % c.uid()
    ep = Endpoint()
    srv = om.get_rpc_server(transport, om.Target(topic=topic, server='s1'), [ep], executor='threading')
    srv.start()
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=15)
    for v in [1, 'tls', {'nested': [1, 2]}, 'x' * 200000]:
        got = client.call({}, 'echo', x=v)
        c.check(got == v, 'echo over TLS returned %r...' % (str(got)[:40],))
    for i in range(5):
        client.cast({}, 'note', x=i)
    c.wait_for(lambda: len(ep.casts) >= 5, 10, '5 casts')
    c.result('calls', 4)
    c.result('casts', len(ep.casts))
    srv.stop()
    srv.wait()
    transport.cleanup()


def scenario_oslo_notify():
    om, _, conf = oslo_transport()
    transport = om.get_notification_transport(conf, url=URL)
    topic = 'amqpit_tlsn_%s' % c.uid()
    got = []
    lock = threading.Lock()

    class Endpoint(object):
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            with lock:
                got.append((publisher_id, event_type, payload))

    notifier = om.Notifier(transport, publisher_id='amqpit.tls', driver='messagingv2', topics=[topic])
    for i in range(3):
        notifier.info({}, 'amqpit.tls.event', {'i': i})
    lst = om.get_notification_listener(transport, [om.Target(topic=topic)], [Endpoint()], executor='threading')
    lst.start()
    c.wait_for(lambda: len(got) >= 3, 10, '3 notifications')
    c.check(sorted(p['i'] for _, _, p in got) == [0, 1, 2], 'notifications %r' % (got,))
    c.check(all(pub == 'amqpit.tls' and et == 'amqpit.tls.event' for pub, et, _ in got), 'fields %r' % (got,))
    c.result('notifications', len(got))
    lst.stop()
    lst.wait()
    transport.cleanup()


def scenario_kombu():
    import kombu
    sslopts = {'ca_certs': CA, 'cert_reqs': ssl.CERT_REQUIRED}
    if CERT:
        sslopts.update(certfile=CERT, keyfile=KEY)
    with kombu.Connection(url.amqp_url(), ssl=sslopts, connect_timeout=10) as conn:
        conn.connect()
        sock = conn.connection.transport.sock
        c.check(isinstance(sock, ssl.SSLSocket), 'kombu socket is %r, not TLS' % (type(sock),))
        c.result('tls_version', sock.version())
        c.result('mechanisms', ','.join(sorted(m.decode() for m in conn.connection.mechanisms)))
        q = kombu.Queue('amqpit_tlsk_%s' % c.uid(), kombu.Exchange('amqpit_tlsk', type='direct'),
                        routing_key='k', auto_delete=True)
        with conn.Producer() as p:
            p.publish({'hello': 'tls'}, exchange=q.exchange, routing_key='k', declare=[q])
        got = []
        with conn.Consumer(q, callbacks=[lambda body, msg: (got.append(body), msg.ack())]):
            c.wait_for(lambda: got or conn.drain_events(timeout=1) or got, 10, 'kombu message')
        c.check(got == [{'hello': 'tls'}], 'kombu got %r' % (got,))


def pika_params(credentials):
    import pika
    import pika.exceptions  # noqa: F401
    ctx = ssl.create_default_context(cafile=CA)
    if CERT:
        ctx.load_cert_chain(CERT, KEY)
    return pika.ConnectionParameters(
        host=url.host, port=url.port, virtual_host=url.vhost, credentials=credentials,
        ssl_options=pika.SSLOptions(ctx, server_hostname=url.host),
        heartbeat=0, socket_timeout=10, connection_attempts=1)


def pika_roundtrip(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = 'amqpit_tlsp_%s' % c.uid()
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish('', q, b'pika over tls')
    m, _, body = ch.basic_get(q, auto_ack=True)
    c.check(body == b'pika over tls', 'pika got %r' % (body,))
    ch.queue_delete(q)


def scenario_pika():
    import pika
    conn = pika.BlockingConnection(pika_params(pika.PlainCredentials(url.user, url.password)))
    pika_roundtrip(conn)
    conn.close()


def scenario_pika_external():
    import pika
    import pika.credentials
    conn = pika.BlockingConnection(pika_params(pika.credentials.ExternalCredentials()))
    pika_roundtrip(conn)
    conn.close()
    c.result('external', 'ok')


def scenario_external_refused():
    import pika
    import pika.credentials
    try:
        pika.BlockingConnection(pika_params(pika.credentials.ExternalCredentials()))
    except pika.exceptions.ProbableAuthenticationError as e:
        c.result('error', repr(e).replace('\n', ' ')[:300])
        return
    c.die('EXTERNAL without a client certificate logged in')


def scenario_refused():
    import pika
    try:
        conn = pika.BlockingConnection(pika_params(pika.PlainCredentials(url.user, url.password)))
    except Exception as e:  # pika wraps the SSL error in AMQPConnectionError
        c.result('error', repr(e).replace('\n', ' ')[:300])
        return
    # TLS 1.3: a refused client certificate shows on the first read.
    try:
        pika_roundtrip(conn)
    except Exception as e:
        c.result('error', repr(e).replace('\n', ' ')[:300])
        return
    c.die('connected with certificates that should be refused')


scenarios = {
    'oslo-rpc': scenario_oslo_rpc,
    'oslo-notify': scenario_oslo_notify,
    'kombu': scenario_kombu,
    'pika': scenario_pika,
    'pika-external': scenario_pika_external,
    'external-refused': scenario_external_refused,
    'refused': scenario_refused,
}
if SCENARIO not in scenarios:
    c.die('unknown scenario %r; one of %s' % (SCENARIO, ', '.join(scenarios)))
scenarios[SCENARIO]()
c.finish()
