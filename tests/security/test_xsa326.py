"""XSA-326: guests could make oxenstored allocate memory without bound.

Among its fixes (4.17): a transaction records at most quota-maxrequests
operations, and the check comes before the operation is performed (so a
refused request changes nothing and the record stops growing); a connection
gets at most quota-maxoutstanding replies queued, after which the daemon
stops reading its requests until it reads replies.  Safe outcome: EQUOTA
from the first request over the limit on (sticky, the commit too), nothing
of that transaction in the store; a guest that never reads its replies has
only a bounded number of requests consumed while others are served, and
then gets every reply, in order, once it reads.
"""
import struct

from conftest import home, xs_error

HDR = struct.Struct("<IIII")
XS_READ = 2


def test_a_transaction_stops_at_maxrequests(configured):
    world = configured("quota-maxrequests = 5")
    g = world.guest(5)
    tx = g.transaction_start()
    for i in range(5):
        g.write(f"t/{i}", "x", tx=tx)
    X = world.X
    assert xs_error(X, g.write, "t/over", "x", tx) == "EQUOTA"
    assert xs_error(X, g.read, "t/0", tx) == "EQUOTA"      # sticky
    assert xs_error(X, g.transaction_end, tx, True) == "EQUOTA"
    assert xs_error(X, world.d0.read, f"{home(5)}/t/0") == "ENOENT"
    g.write("outside", "ok")                                 # tid 0 is not limited
    world.assert_alive()


def test_a_guest_that_never_reads_replies_is_not_read_either(configured):
    limit = 4
    world = configured(f"quota-maxoutstanding = {limit}")
    g, other = world.guest(5), world.guest(6)
    g.write("big", "v" * 2000)                     # each reply ~2 KiB: the rsp ring holds none
    requests = [HDR.pack(XS_READ, 100 + i, 0, 4) + b"big\0" for i in range(30)]
    wire = b"".join(requests)
    assert g.ring.write_req(wire) == len(wire)     # 30 x 20 bytes fit the req ring
    g.client.notify()
    for _ in range(5):                              # let the daemon do what it will
        world.assert_guest_served(other, 6)
    consumed = (g.ring.req_cons - (g.ring.req_prod - len(wire))) // 20
    assert consumed == limit + 1, consumed          # 4 queued + 1 being written; not 30
    for i in range(30):                             # now it reads: everything, in order
        assert g.client.recv_reply(100 + i, 10.0) == (XS_READ, 0, b"v" * 2000)
    world.assert_alive()
