"""Shared helpers for the amqpit scripts (imported from the script's folder).

Every script takes an oslo.messaging transport URL,
rabbit://USER:PASS@HOST:PORT/, as its first argument, bounds every wait,
arms a watchdog that ends the process if the whole script overruns, prints
"result KEY VALUE" lines for the Go side to check and a final "ok".
"""
import faulthandler
import logging
import os
import sys
import threading
import time
import urllib.parse
import uuid


def die(msg):
    """Report a failure and end the process at once (no thread may hold it)."""
    sys.stdout.flush()
    sys.stderr.write('FAIL: %s\n' % msg)
    sys.stderr.flush()
    os._exit(1)


def check(cond, msg):
    if not cond:
        die(msg)


def finish():
    """Print the final ok and exit, whatever non-daemon threads remain."""
    print('ok', flush=True)
    sys.stderr.flush()
    os._exit(0)


def watchdog(seconds):
    """End the process with status 3 if it is still running after seconds."""
    def fire():
        sys.stderr.write('FAIL: watchdog: script still running after %ss; threads:\n' % seconds)
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(3)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def result(key, value):
    print('result %s %s' % (key, value), flush=True)


def wait_for(cond, timeout, what, interval=0.05):
    """Poll cond until it is true; die naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            die('timed out after %ss waiting for %s' % (timeout, what))
        time.sleep(interval)


def uid():
    return uuid.uuid4().hex[:10]


class URL(object):
    """The parts of rabbit://USER:PASS@HOST:PORT/VHOST."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.url = url
        self.user = urllib.parse.unquote(u.username or 'guest')
        self.password = urllib.parse.unquote(u.password or 'guest')
        self.host = u.hostname or '127.0.0.1'
        self.port = u.port or 5672
        path = u.path[1:] if u.path.startswith('/') else u.path
        self.vhost = urllib.parse.unquote(path) or '/'

    def amqp_url(self):
        """kombu's form: amqp://USER:PASS@HOST:PORT/VHOST (vhost '/' is '//')."""
        return 'amqp://%s:%s@%s:%d/%s' % (
            urllib.parse.quote(self.user, safe=''),
            urllib.parse.quote(self.password, safe=''),
            self.host, self.port, urllib.parse.quote(self.vhost, safe=''))

    def hostport(self):
        return '%s:%d' % (self.host, self.port)


class Records(logging.Handler):
    """Keeps every log record's formatted message for later assertions."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self._mu = threading.Lock()
        self.messages = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not kill a thread
            msg = str(record.msg)
        with self._mu:
            self.messages.append((record.levelno, record.name, msg, record.created))

    def matching(self, *needles):
        with self._mu:
            return [m for m in self.messages
                    if all(n in m[2] for n in needles)]


def oslo_conf(**rabbit_overrides):
    """A fresh ConfigOpts for oslo.messaging with [oslo_messaging_rabbit]
    overrides (applied now, before any transport reads them)."""
    from oslo_config import cfg
    from oslo_messaging._drivers import impl_rabbit
    from oslo_messaging._metrics import client as metrics_client
    conf = cfg.ConfigOpts()
    # oslo.messaging 14 reads [oslo_messaging_metrics] when it builds a
    # client; register it so a bare ConfigOpts works.
    conf.register_opts(metrics_client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    conf.register_opts(impl_rabbit.rabbit_opts, group='oslo_messaging_rabbit')
    conf([], project='amqpit')
    for k, v in rabbit_overrides.items():
        conf.set_override(k, v, group='oslo_messaging_rabbit')
    return conf


def setup_logging(level=logging.WARNING):
    """Log to stderr (the Go side shows it on failure) and keep records."""
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format='%(relativeCreated)7d %(threadName)s %(name)s %(levelname)s %(message)s')
    rec = Records()
    logging.getLogger().addHandler(rec)
    return rec
