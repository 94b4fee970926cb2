"""Drive substrate's etcd JSON gateway with Debian's python3-etcd3gw 2.0.0,
using the client's default api path (/v3alpha/): put/get, lease, watch.

usage: etcd3gw_client.py PORT
"""
import sys
import threading

import etcd3gw

port = int(sys.argv[1])
c = etcd3gw.client(host="127.0.0.1", port=port)
assert c.api_path == "/v3alpha/", c.api_path  # the default this test is about

assert c.put("gw-key", "v1") is True
assert c.get("gw-key") == [b"v1"], c.get("gw-key")
assert c.create("gw-key", "v2") is False  # already exists
assert c.replace("gw-key", "v1", "v2") is True
assert c.get("gw-key") == [b"v2"]
c.put("gw-prefix/a", "1")
c.put("gw-prefix/b", "2")
assert sorted(v for v, _ in c.get_prefix("gw-prefix/")) == [b"1", b"2"]

lease = c.lease(ttl=30)
assert 0 < lease.ttl() <= 30, lease.ttl()
c.put("gw-leased", "x", lease=lease)
assert [k for k in lease.keys()] == [b"gw-leased"], lease.keys()
assert lease.refresh() > 0
assert lease.revoke() is True
assert c.get("gw-leased") == []

events, cancel = c.watch("gw-watched")
got = []
done = threading.Event()


def consume():
    for ev in events:
        got.append(ev)
        done.set()
        return


t = threading.Thread(target=consume, daemon=True)
t.start()
# the watch is established asynchronously: keep writing until it sees one
for i in range(50):
    c.put("gw-watched", "w%d" % i)
    if done.wait(0.2):
        break
cancel()
assert got, "watch saw no event"
assert got[0]["kv"]["key"] == b"gw-watched", got[0]
assert c.delete("gw-key") is True
print("etcd3gw ok")
