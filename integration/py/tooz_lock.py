"""Take and release a lock through tooz's etcd3:// driver (python3-tooz
3.1.0 with python3-etcd3 0.12, gRPC), with a second member contending.

usage: tooz_lock.py PORT
"""
import sys
import warnings

from tooz import coordination

warnings.simplefilter("ignore")  # the etcd3 driver's deprecation warning
port = int(sys.argv[1])
url = "etcd3://127.0.0.1:%d" % port
a = coordination.get_coordinator(url, b"member-a")
b = coordination.get_coordinator(url, b"member-b")
a.start(start_heart=True)
b.start(start_heart=True)

la = a.get_lock(b"substrate-test-lock")
lb = b.get_lock(b"substrate-test-lock")
assert la.acquire(blocking=False) is True
assert lb.acquire(blocking=False) is False, "second member got a held lock"
assert la.release() is True
assert lb.acquire(blocking=5) is True, "lock not free after release"
assert lb.release() is True
a.stop()
b.stop()
print("tooz ok")
