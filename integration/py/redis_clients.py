"""Drive substrate's lab Redis endpoint with tooz's redis:// driver (lock
and group membership) and dogpile.cache's redis backend.

usage: redis_clients.py PORT
"""
import sys
import time
import warnings

warnings.simplefilter("ignore")
port = int(sys.argv[1])


def check(what, got, want):
    if got != want:
        sys.exit("%s: got %r, want %r" % (what, got, want))


from tooz import coordination

url = "redis://127.0.0.1:%d?timeout=5" % port
a = coordination.get_coordinator(url, b"member-a")
b = coordination.get_coordinator(url, b"member-b")
a.start(start_heart=True)
b.start(start_heart=True)
la, lb = a.get_lock(b"lab-lock"), b.get_lock(b"lab-lock")
check("a acquires", la.acquire(blocking=False), True)
check("b is refused", lb.acquire(blocking=False), False)
check("a releases", la.release(), True)
check("b acquires", lb.acquire(blocking=5), True)
lb.release()
a.create_group(b"workers").get()
a.join_group(b"workers").get()
b.join_group(b"workers").get()
check("members", sorted(a.get_members(b"workers").get()), [b"member-a", b"member-b"])
a.stop()
b.stop()

from dogpile.cache import make_region

region = make_region().configure(
    "dogpile.cache.redis",
    expiration_time=60,
    arguments={"host": "127.0.0.1", "port": port, "redis_expiration_time": 1},
)
region.set("token", {"user": "admin"})
check("dogpile get", region.get("token"), {"user": "admin"})
time.sleep(1.5)  # redis_expiration_time: the server expires the key
check("dogpile expired", type(region.get("token")).__name__, "NoValue")
print("redis clients ok")
