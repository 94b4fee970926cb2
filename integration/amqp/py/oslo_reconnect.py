#!/usr/bin/python3
"""An RPC server and a notification listener survive the broker
force-closing every connection (connection.close 320 CONNECTION_FORCED).

usage: oslo_reconnect.py URL

Protocol with the driver (the Go test), one line each way:
  script prints "READY-FOR-CLOSE" once RPC and notifications work;
  the driver force-closes all client connections and writes "CLOSED".
The script then requires that calls, casts and notifications work again,
that oslo logged the forced close and reconnected, and prints "ok".
"""
import select
import sys
import threading
import time

import _common as c

c.watchdog(55)
if len(sys.argv) != 2:
    c.die(__doc__)
URL = sys.argv[1]
rec = c.setup_logging()

import logging  # noqa: E402
import oslo_messaging as om  # noqa: E402

# "Reconnected to AMQP server" is logged at INFO.
for name in ('oslo.messaging._drivers.impl_rabbit', 'oslo_messaging._drivers.impl_rabbit'):
    logging.getLogger(name).setLevel(logging.INFO)


class RPC(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.casts = []

    def echo(self, ctxt, x):
        return x

    def note(self, ctxt, x):
        with self.lock:
            self.casts.append(x)


class Notes(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.lock:
            self.got.append(payload['n'])

    def seen(self):
        with self.lock:
            return list(self.got)


conf = c.oslo_conf()
u = c.uid()
topic, ntopic = 'amqpit_rc_%s' % u, 'amqpit_rcn_%s' % u
transport = om.get_rpc_transport(conf, url=URL)
ntransport = om.get_notification_transport(conf, url=URL)
rpc = RPC()
server = om.get_rpc_server(transport, om.Target(topic=topic, server='srv1'), [rpc],
                           executor='threading')
server.start()
notes = Notes()
lst = om.get_notification_listener(ntransport, [om.Target(topic=ntopic)], [notes],
                                   executor='threading')
lst.start()
client = om.get_rpc_client(transport, om.Target(topic=topic), timeout=20)
notifier = om.Notifier(ntransport, driver='messagingv2', topics=[ntopic],
                       publisher_id='amqpit')

c.check(client.call({}, 'echo', x=1) == 1, 'call before the close')
notifier.info({}, 'amqpit.rc', {'n': 1})
c.wait_for(lambda: notes.seen() == [1], 10, 'notification before the close')

print('READY-FOR-CLOSE', flush=True)
r, _, _ = select.select([sys.stdin], [], [], 30)
c.check(r, 'no CLOSED from the driver within 30s')
line = sys.stdin.readline().strip()
c.check(line == 'CLOSED', 'driver said %r, want CLOSED' % line)
t_closed = time.monotonic()

# The listeners notice at once (they are blocked reading); oslo reconnects
# after kombu_reconnect_delay (1 s) plus its backoff. The call's publish
# goes through a pooled sender connection that finds out when it writes.
c.check(client.call({}, 'echo', x=2) == 2, 'first call after the close')
c.result('first_call_after_close_s', '%.2f' % (time.monotonic() - t_closed))
for i in range(3, 13):
    c.check(client.call({}, 'echo', x=i) == i, 'call %d after the close' % i)
for i in range(5):
    client.cast({}, 'note', x=i)
c.wait_for(lambda: len(rpc.casts) >= 5, 15, 'casts after the close')
c.check(sorted(rpc.casts) == list(range(5)), 'casts after the close: %r' % rpc.casts)
for n in range(2, 7):
    notifier.info({}, 'amqpit.rc', {'n': n})
c.wait_for(lambda: len(notes.seen()) >= 6, 20, 'notifications after the close (got %r)' % notes.got)
time.sleep(0.3)
c.check(sorted(notes.seen()) == list(range(1, 7)), 'notifications: %r' % notes.seen())
c.result('reconnect_s', '%.2f' % (time.monotonic() - t_closed))

# The close really happened and every consuming connection came back:
# the RPC server, the notification listener and the reply waiter.
forced = rec.matching('CONNECTION_FORCED')
c.check(forced, 'oslo logged no CONNECTION_FORCED error; log: %r' % rec.messages[-20:])
reconnected = rec.matching('Reconnected to AMQP server')
c.result('forced_errors', len(forced))
c.result('reconnected', len(reconnected))
c.check(len(reconnected) >= 3, 'only %d reconnects logged: %r' % (len(reconnected), reconnected))

lst.stop()
server.stop()
lst.wait()
server.wait()
transport.cleanup()
ntransport.cleanup()
c.finish()
