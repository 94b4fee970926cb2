#!/usr/bin/python3
"""Client loops that must see no error while something else goes wrong in
the same substrate process (integration/reliability_faults_test.go).

usage: reliability_loops.py oslo URL
       reliability_loops.py memcache HOST PORT [CAFILE]

oslo      an oslo.messaging RPC server and a client calling it in a loop
          (rabbit driver, threading executor): every call must return its
          argument, and neither oslo.messaging nor kombu nor py-amqp may log
          a warning or an error (a reconnect is logged, and is an error
          here: the fault was someone else's)
memcache  pymemcache set then get of a fresh key, in a loop; every get must
          return what was set (over TLS, verified with CAFILE, when given)

Each loop prints "progress N" after every 20 iterations and runs until
stdin is closed, then prints "result count N" and "ok". The first failure
prints "FAIL: ..." and exits 1.
"""
import logging
import sys
import threading
import time
import uuid

stop = threading.Event()


def watch_stdin():
    sys.stdin.read()
    stop.set()


def die(msg):
    print('FAIL: ' + msg, flush=True)
    sys.exit(1)


class Complaints(logging.Handler):
    """Keeps WARNING and above from the messaging libraries."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append('%s %s: %s' % (record.levelname, record.name, record.getMessage()))


def loop(step):
    threading.Thread(target=watch_stdin, daemon=True).start()
    n = 0
    while not stop.is_set():
        step(n)
        n += 1
        if n % 20 == 0:
            print('progress %d' % n, flush=True)
    print('result count %d' % n, flush=True)


def oslo(url):
    complaints = Complaints()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(complaints)
    from oslo_config import cfg
    import oslo_messaging as om
    from oslo_messaging._drivers import impl_rabbit
    from oslo_messaging._metrics import client as metrics_client
    conf = cfg.ConfigOpts()
    conf.register_opts(metrics_client.oslo_messaging_metrics, group='oslo_messaging_metrics')
    conf.register_opts(impl_rabbit.rabbit_opts, group='oslo_messaging_rabbit')
    conf([], project='reliability')
    transport = om.get_rpc_transport(conf, url=url)
    topic = 'reliability_%s' % uuid.uuid4().hex[:8]

    class Endpoint(object):
        def echo(self, ctxt, x):
            return x

    srv = om.get_rpc_server(transport, om.Target(topic=topic, server='srv'),
                            [Endpoint()], executor='threading')
    srv.start()
    client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=10)

    def step(n):
        try:
            got = client.call({}, 'echo', x=n)
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            die('call %d: %r' % (n, e))
        if got != n:
            die('call %d returned %r' % (n, got))
        if complaints.records:
            die('after call %d: %s' % (n, '; '.join(complaints.records[:5])))

    loop(step)
    if complaints.records:
        die('at the end: %s' % '; '.join(complaints.records[:5]))
    # What the libraries say while the loop's own server and transport
    # shut down is not about the faults.
    logging.getLogger().removeHandler(complaints)
    srv.stop()
    srv.wait()
    transport.cleanup()


def memcache(host, port, cafile=None):
    from pymemcache.client.base import Client
    ctx = None
    if cafile:
        import ssl
        ctx = ssl.create_default_context(cafile=cafile)
    c = Client((host, int(port)), connect_timeout=5, timeout=5, tls_context=ctx)
    tag = uuid.uuid4().hex[:8]

    def step(n):
        key = 'reliability-%s-%d' % (tag, n)
        val = ('v%d' % n).encode() * 10
        try:
            if not c.set(key, val, noreply=False):
                die('set %s not stored' % key)
            got = c.get(key)
        except Exception as e:  # noqa: BLE001
            die('%s: %r' % (key, e))
        if got != val:
            die('get %s returned %r' % (key, got))

    loop(step)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == 'oslo':
        oslo(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == 'memcache':
        memcache(*sys.argv[2:5])
    else:
        die(__doc__)
    print('ok', flush=True)


main()
