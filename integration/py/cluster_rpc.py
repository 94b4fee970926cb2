#!/usr/bin/python3
"""An oslo.messaging RPC server and client on a substrate cluster
(integration/broker_cluster_test.go), with oslo.messaging's default
reconnect settings.

usage: cluster_rpc.py SERVER_URL CLIENT_URL

The server listens through SERVER_URL, the client calls it through
CLIENT_URL (three-host transport_urls, each starting with another node),
one call at a time with a 1 s timeout (a call's round trip here takes
milliseconds): a call sent on a connection as its leader dies is lost (as
with RabbitMQ, where a node's death loses the calls in flight on it), and
that timeout bounds how long it holds the next one; oslo.messaging's
reconnect (its defaults) adds 1-2 s to it. For every call it prints
"ok N START END" or "err N START END REASON" (times: time.time()), until
stdin is closed; then "done". oslo.messaging's and kombu's log (INFO and
above: lost connections, reconnects) goes to stderr, each line starting
with its time.time(), for the driver to show around a slow recovery.
"""
import logging
import sys
import threading
import time
import uuid

if len(sys.argv) != 3:
    print(__doc__)
    sys.exit(2)
SERVER_URL, CLIENT_URL = sys.argv[1], sys.argv[2]

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format='%(created).3f %(threadName)s %(name)s %(levelname)s %(message)s')
from oslo_config import cfg  # noqa: E402
import oslo_messaging as om  # noqa: E402
from oslo_messaging._drivers import impl_rabbit  # noqa: E402
from oslo_messaging._metrics import client as metrics_client  # noqa: E402

stop = threading.Event()


def watch_stdin():
    sys.stdin.read()
    stop.set()


def conf():
    c = cfg.ConfigOpts()
    c.register_opts(metrics_client.oslo_messaging_metrics, group='oslo_messaging_metrics')
    c.register_opts(impl_rabbit.rabbit_opts, group='oslo_messaging_rabbit')
    c([], project='cluster_rpc')
    return c


class Endpoint(object):
    def echo(self, ctxt, x):
        return x


topic = 'cluster_rpc_%s' % uuid.uuid4().hex[:8]
stransport = om.get_rpc_transport(conf(), url=SERVER_URL)
srv = om.get_rpc_server(stransport, om.Target(topic=topic, server='srv'),
                        [Endpoint()], executor='threading')
srv.start()
ctransport = om.get_rpc_transport(conf(), url=CLIENT_URL)
client = om.get_rpc_client(ctransport, om.Target(topic=topic), timeout=1)
threading.Thread(target=watch_stdin, daemon=True).start()
n = 0
while not stop.is_set():
    t0 = time.time()
    try:
        got = client.call({}, 'echo', x=n)
        if got != n:
            print('err %d %.3f %.3f returned %r' % (n, t0, time.time(), got), flush=True)
        else:
            print('ok %d %.3f %.3f' % (n, t0, time.time()), flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        print('err %d %.3f %.3f %s' % (n, t0, time.time(), type(e).__name__), flush=True)
    n += 1
    time.sleep(0.05)
print('done', flush=True)
