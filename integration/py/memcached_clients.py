"""Drive substrate's memcached endpoint with Debian's Python clients through
their real code paths: pymemcache (writes with noreply, as its default),
python-memcached, and oslo.cache with both memcache backends OpenStack
uses (oslo_cache.memcache_pool and dogpile.cache.pymemcache).

usage: memcached_clients.py PORT
"""
import sys
import uuid

port = int(sys.argv[1])
server = "127.0.0.1:%d" % port
tag = uuid.uuid4().hex[:8]


def check(what, got, want):
    if got != want:
        sys.exit("%s: got %r, want %r" % (what, got, want))


# pymemcache: set/add/replace with noreply (the default: it never reads the
# reply, so a stray line would desync every later command), then reads.
from pymemcache.client.base import Client

pm = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)
check("pymemcache default noreply", pm.default_noreply, True)
for i in range(50):
    pm.set("pm-%s-%d" % (tag, i), ("v%d" % i).encode())
pm.add("pm-%s-0" % tag, b"not added")  # exists: NOT_STORED, unread
pm.delete("pm-%s-1" % tag)             # noreply too
check("pymemcache get", pm.get("pm-%s-0" % tag), b"v0")
check("pymemcache deleted", pm.get("pm-%s-1" % tag), None)
many = pm.get_many(["pm-%s-%d" % (tag, i) for i in range(2, 50)])
check("pymemcache get_many count", len(many), 48)
check("pymemcache get_many value", many["pm-%s-49" % tag], b"v49")
check("pymemcache incr", (pm.set("pm-n-" + tag, b"41", noreply=False), pm.incr("pm-n-" + tag, 1)), (True, 42))
value, cas = pm.gets("pm-%s-2" % tag)
check("pymemcache cas ok", pm.cas("pm-%s-2" % tag, b"new", cas, noreply=False), True)
check("pymemcache cas stale", pm.cas("pm-%s-2" % tag, b"newer", cas, noreply=False), False)
check("pymemcache after cas", pm.get("pm-%s-2" % tag), b"new")
pm.close()

# python-memcached (sends "get key \r\n"-style trailing spaces in places,
# pickles non-strings).
import memcache

mc = memcache.Client([server])
check("python-memcached set", mc.set("mc-" + tag, {"a": [1, 2]}), True)
check("python-memcached get", mc.get("mc-" + tag), {"a": [1, 2]})
check("python-memcached set_multi", mc.set_multi({"mc1-" + tag: "x", "mc2-" + tag: "y"}), [])
check("python-memcached get_multi", mc.get_multi(["mc1-" + tag, "mc2-" + tag, "nope-" + tag]),
      {"mc1-" + tag: "x", "mc2-" + tag: "y"})
check("python-memcached delete", mc.delete("mc-" + tag), 1)
check("python-memcached deleted", mc.get("mc-" + tag), None)
mc.disconnect_all()

# oslo.cache, as keystone and keystonemiddleware configure it.
from oslo_cache import core as cache
from oslo_config import cfg

for backend in ("oslo_cache.memcache_pool", "dogpile.cache.pymemcache"):
    conf = cfg.ConfigOpts()
    cache.configure(conf)
    conf([], project="substrate-test")
    conf.set_override("enabled", True, group="cache")
    conf.set_override("backend", backend, group="cache")
    conf.set_override("memcache_servers", [server], group="cache")
    region = cache.create_region()
    cache.configure_cache_region(conf, region)
    k = "%s-%s" % (backend, tag)
    region.set(k + "-token", {"user": "admin", "roles": ["member"]})
    check(backend + " get", region.get(k + "-token"), {"user": "admin", "roles": ["member"]})
    region.set_multi({k + "-a": 1, k + "-b": "two"})
    check(backend + " get_multi", region.get_multi([k + "-a", k + "-b", k + "-missing"])[:2], [1, "two"])
    region.delete(k + "-token")
    got = region.get(k + "-token")
    check(backend + " deleted", type(got).__name__, "NoValue")

print("memcached clients ok")
