"""The main loop's policy (xenstored.ml main_loop and helpers; event.ml, xenstored.ml: main_loop).

The scheduler is driven with fakes for the process, the connections and the
hypervisor, and a real `Domains` registry, so each rule is checked on its
own: who is served on an iteration (io credit), what the ring scan does,
when periodic work runs, the poll timeout, event-channel handling.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from unittest import mock

import pytest

from oxsd.config import Settings
from oxsd.domain import Domain
from oxsd.domains import Domains
from oxsd.event import Event
from oxsd.stats import ConnStats
from oxsd.scheduler import (CREDIT_POLL_INTERVAL, CREDIT_POLL_MAX, PERIOD_OPS_INTERVAL,
                             EVTCHN_BATCH, RING_BATCH, Scheduler, busy_poll_ns)
from support.fakes import Info


# -- fakes --------------------------------------------------------------------

class FakeHandle:
    def __init__(self) -> None:
        self.next_port = 10
        self.queue: List[int] = []
        self.unmasked: List[int] = []

    def fd(self) -> int:
        return -1

    def bind_interdomain(self, domid: int, port: int) -> int:
        self.next_port += 1
        return self.next_port

    def bind_virq(self, virq: int) -> int:
        return 3

    def unbind(self, port: int) -> None:
        pass

    def notify(self, port: int) -> None:
        pass

    def pending(self) -> Optional[int]:
        return self.queue.pop(0) if self.queue else None

    def unmask(self, port: int) -> None:
        self.unmasked.append(port)


class FakeHv:
    def __init__(self) -> None:
        self.states: Dict[int, Info] = {}

    def map_ring(self, domid: int, mfn: int) -> bytearray:
        return bytearray(4096)

    def domain_getinfo(self, domid: int) -> Info:
        if domid not in self.states:
            raise OSError(3, "no such domain")
        return self.states[domid]


class FakePipe:
    """A connection's watch events not yet delivered (none here)."""

    def __init__(self) -> None:
        self.q: List[object] = []


class FakeXb:
    """The transport of a FakeCon: its work flag, and the notifications a batch would send."""

    def __init__(self) -> None:
        self.con: Optional["FakeCon"] = None
        self.held = False
        self.holds = 0
        self.releases = 0

    def has_more_work(self, input_allowed: bool = True) -> bool:
        return self.con.more_work

    def has_more_input(self) -> bool:
        return self.con.more_work

    def has_output(self) -> bool:
        return False

    def hold_notify(self) -> None:
        self.held = True
        self.holds += 1

    def release_notify(self) -> None:
        assert self.held, "release without hold"
        self.held = False
        self.releases += 1


@dataclass
class FakeCon:
    dom: Domain
    more_work: bool = False
    # what the next do_input does to more_work (the ring scan's probe)
    input_finds_work: bool = False
    # requests waiting in the ring: when set, each do_input takes one (more
    # work follows, as work_again), and a read with none left clears more_work
    ring: Optional[int] = None
    xb: FakeXb = field(default_factory=FakeXb)
    pending_source_watchevents: FakePipe = field(default_factory=lambda: FakePipe())
    counters: ConnStats = field(default_factory=ConnStats)

    def __post_init__(self) -> None:
        self.xb.con = self

    def has_more_work(self) -> bool:
        return self.more_work

    def has_more_input(self) -> bool:
        return self.more_work

    def has_output(self) -> bool:
        return False


class FakeProcess:
    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.txreg = type("TxReg", (), {"failed_commits": 0, "failed_commits_no_culprit": 0,
                                        "reset_conflict_stats": lambda self: None})()

    def fire_spec_watches(self, root, specpath: str, domids) -> None:
        self.cons.fire_spec_watches(root, specpath)

    def do_input(self, con: FakeCon) -> None:
        self.calls.append(("in", con.dom.id))
        if con.input_finds_work:
            con.more_work = True
        if con.ring is not None:
            con.more_work = con.ring > 0
            con.ring = max(0, con.ring - 1)

    def do_output(self, con: FakeCon) -> None:
        self.calls.append(("out", con.dom.id))


class FakeCons:
    def __init__(self) -> None:
        self.anonymous: Dict[int, object] = {}
        self.domains: Dict[int, FakeCon] = {}
        self.ports: Dict[int, FakeCon] = {}
        self.deleted: List[int] = []
        self.fired: List[str] = []

    def add(self, dom: Domain) -> FakeCon:
        con = self.domains[dom.id] = FakeCon(dom)
        self.ports[dom.get_local_port()] = con
        return con

    def find_domain(self, domid: int) -> FakeCon:
        return self.domains[domid]

    def find_domain_by_port(self, port: int) -> FakeCon:
        return self.ports[port]

    def has_more_work(self) -> List[FakeCon]:
        return [c for c in self.domains.values() if c.has_more_work()]

    def del_domain(self, domid: int) -> None:
        self.deleted.append(domid)
        self.domains.pop(domid, None)

    def fire_spec_watches(self, root, path) -> None:
        self.fired.append(str(path))

    def stats(self):
        return (0, 0, 0, len(self.domains), 0, 0)

    def prevents_quit(self):
        return []


class FakeStore:
    def __init__(self) -> None:
        self.reset: List[int] = []

    def reset_permissions(self, domid: int) -> None:
        self.reset.append(domid)

    def get_root(self):
        return "root"

    def stats(self):
        return (6, 0, 0)


class FakeHistory:
    def __init__(self) -> None:
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    sched: Scheduler
    doms: Domains
    cons: FakeCons
    process: FakeProcess
    hv: FakeHv
    handle: FakeHandle
    store: FakeStore
    clock: Clock
    settings: Settings
    history: FakeHistory
    con: Dict[int, FakeCon] = field(default_factory=dict)

    def add(self, domid: int, credit: int = 0) -> FakeCon:
        self.hv.states.setdefault(domid, Info())
        dom = self.doms.create0() if domid == 0 else self.doms.create(domid, 1, remote_port=1)
        dom.set_io_credit(credit)
        con = self.con[domid] = self.cons.add(dom)
        return con


@pytest.fixture
def env():
    settings = Settings()
    settings.xenstored_kva = settings.xenstored_port = "/unused"
    handle = FakeHandle()
    event = Event.init(handle)
    hv = FakeHv()
    hv.read_port_file = lambda path: 1
    hv.map_file = lambda path: bytearray(4096)
    cons, process, store, history, clock = FakeCons(), FakeProcess(), FakeStore(), FakeHistory(), Clock()
    process.cons = cons
    sched = Scheduler(store=store, cons=cons, doms=None, process=process, settings=settings,
                      history=history, listen_sock=None, event=event, poll_evtchn=False,
                      clock=clock)
    doms = Domains(event, hv, settings, sched.advance_next_frequent_ops)
    sched.doms = doms
    e = Env(sched, doms, cons, process, hv, handle, store, clock, settings, history)
    yield e
    sched.selector.close()


# -- process_domains (xenstored.ml: process_domains) ----------------------------------------------

def test_each_domain_with_credit_gets_one_input_and_one_output_step(env):
    env.add(0)
    env.add(5, credit=2)
    env.add(6, credit=0)
    env.add(7, credit=1)
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5), ("in", 7), ("out", 7)]
    assert [env.doms.find(d).io_credit for d in (5, 6, 7)] == [1, 0, 0]


def test_bad_and_conflict_paused_domains_are_not_served_and_keep_their_credit(env):
    env.add(5, credit=3).dom.mark_as_bad()
    env.add(6, credit=3).dom.conflict_credit = 0.0
    env.sched.process_domains()
    assert env.process.calls == []
    assert env.doms.find(5).io_credit == 3 and env.doms.find(6).io_credit == 3


def test_a_served_domain_spends_one_credit_per_iteration_until_none_is_left(env):
    env.add(5, credit=2)
    for _ in range(4):
        env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)] * 2
    assert env.doms.find(5).io_credit == 0


# -- batches: the rounds of following iterations, served at once -----------------------

def test_a_domain_with_more_work_gets_its_next_rounds_in_the_same_iteration(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 3
    env.sched.process_domains()
    # 3 requests and the empty read, as the original's next 3 iterations would
    assert env.process.calls == [("in", 5), ("out", 5)] * 4
    assert not con.more_work
    # only the first round is paid: each later one earned +1 in the original
    assert con.dom.io_credit == 0


def test_a_batch_keeps_the_credit_the_original_would_have_left(env):
    con = env.add(5, credit=3)
    con.more_work, con.ring = True, 2
    env.sched.process_domains()
    assert len(env.process.calls) == 2 * 3 and con.dom.io_credit == 2


def test_a_batch_is_at_most_ring_batch_rounds_and_the_rest_waits_for_the_next_iteration(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, RING_BATCH + 5
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)] * RING_BATCH
    assert con.more_work and con.dom.io_credit == 0
    env.process.calls.clear()
    env.sched.main_loop()  # more work: +1 credit, served at once
    assert env.process.calls == [("in", 5), ("out", 5)] * 6


def test_domains_are_served_in_table_order_each_with_its_batch(env):
    a, b = env.add(5, credit=1), env.add(6, credit=1)
    a.more_work, a.ring = True, 1
    b.more_work, b.ring = True, 1
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)] * 2 + [("in", 6), ("out", 6)] * 2


def test_a_batch_stops_when_the_domain_turns_bad(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 5
    do_input = env.process.do_input

    def bad_on_second(c):
        do_input(c)
        if len(env.process.calls) == 3:
            c.dom.mark_as_bad()
    env.process.do_input = bad_on_second
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)] * 2


def test_a_batch_stops_when_the_domain_is_paused_for_conflict(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 5
    do_input = env.process.do_input

    def conflict(c):
        do_input(c)
        c.dom.conflict_credit = 0.0
    env.process.do_input = conflict
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)]


def test_a_batch_stops_when_the_connection_goes_and_sends_no_notification(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 5
    do_input = env.process.do_input

    def released(c):
        do_input(c)
        env.cons.del_domain(5)
    env.process.do_input = released
    env.sched.process_domains()
    assert env.process.calls == [("in", 5), ("out", 5)]
    assert con.xb.holds == 1 and con.xb.releases == 0


def test_a_batch_defers_its_notifications_to_one_release(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 4
    env.sched.process_domains()
    assert con.xb.holds == 1 and con.xb.releases == 1 and not con.xb.held


def _input_raises_at_call(env, n: int) -> None:
    """Make the process's do_input raise once n calls (input and output) are recorded."""
    do_input = env.process.do_input

    def raises(c):
        do_input(c)
        if len(env.process.calls) == n:
            raise RuntimeError("escapes to the main loop")
    env.process.do_input = raises


def test_a_later_round_that_raises_keeps_the_credit_its_iteration_earned(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 5
    _input_raises_at_call(env, 5)  # the third round's input
    with pytest.raises(RuntimeError):
        env.sched.process_domains()
    # the original: round 1 paid (-1); the next iteration +1 and round 2 -1;
    # the next +1 and round 3 raised before its -1
    assert con.dom.io_credit == 1 and con.xb.releases == 1


def test_a_first_round_that_raises_leaves_nothing_held(env):
    """The paid round notifies as it goes (xb.ml); only the batch after it is held."""
    con = env.add(5, credit=1)

    def boom(c):
        raise RuntimeError("escapes to the main loop")
    env.process.do_input = boom
    with pytest.raises(RuntimeError):
        env.sched.process_domains()
    assert con.xb.holds == 0 and con.xb.releases == 0 and not con.xb.held


def test_a_later_round_that_raises_still_releases_the_notification(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 5
    _input_raises_at_call(env, 3)  # the second round's input
    with pytest.raises(RuntimeError):
        env.sched.process_domains()
    assert con.xb.holds == 1 and con.xb.releases == 1 and not con.xb.held


def test_a_polled_round_that_finds_nothing_still_releases_the_notification(env):
    con = env.add(5, credit=2)
    env.sched.process_domains(polled=True)
    assert con.dom.io_credit == 2 and con.xb.releases == 1 and not con.xb.held


# -- the ring scan (xenstored.ml: periodic_ops) -------------------------------------------------

def test_ring_scan_finds_a_lazy_domain_and_gives_it_32_plus_2n_credit(env, caplog):
    env.add(0)
    env.add(5).input_finds_work = True
    with caplog.at_level(logging.INFO):
        env.sched.ring_scan_checker(env.doms.find(5))
    assert env.process.calls == [("out", 5), ("in", 5)]  # output first, then input
    assert env.doms.find(5).io_credit == 36
    assert "found lazy domain 5, credit 36" in caplog.text
    assert env.cons.domains[5].counters.lazy_found == 1  # oxsd-top's LAZY mark


def test_ring_scan_credit_grows_with_the_number_of_domains(env):
    for d in (0, 5, 6, 7):
        env.add(d)
    env.con[6].input_finds_work = True
    env.sched.ring_scan_checker(env.doms.find(6))
    assert env.doms.find(6).io_credit == 32 + 2 * 4


def test_ring_scan_skips_domains_holding_credit_or_already_busy(env, caplog):
    env.add(5, credit=1).input_finds_work = True
    busy = env.add(6)
    busy.more_work = True
    with caplog.at_level(logging.DEBUG):
        env.sched.ring_scan_checker(env.doms.find(5))
        env.sched.ring_scan_checker(env.doms.find(6))
    assert env.process.calls == []
    assert "Looking up domid 5" not in caplog.text and "Looking up domid 6" in caplog.text
    assert env.doms.find(5).io_credit == 1 and env.doms.find(6).io_credit == 0


def test_ring_scan_leaves_an_idle_domain_alone(env, caplog):
    env.add(5)
    with caplog.at_level(logging.INFO):
        env.sched.ring_scan_checker(env.doms.find(5))
    assert env.process.calls == [("out", 5), ("in", 5)]
    assert env.doms.find(5).io_credit == 0 and "found lazy" not in caplog.text


def test_ring_scan_also_probes_a_bad_domain(env):
    """[quirk] the scan does not skip bad domains."""
    env.add(5).dom.mark_as_bad()
    env.sched.ring_scan_checker(env.doms.find(5))
    assert env.process.calls == [("out", 5), ("in", 5)]


# -- periodic_ops ------------------------------------------------------------------

def _scans(env) -> int:
    return sum(1 for c in env.process.calls if c[0] == "out")


def test_periodic_ops_scans_when_the_interval_has_passed_since_the_last_scan(env):
    env.settings.ring_scan_interval = 20
    env.add(5)
    env.sched.periodic_ops(1000.0)  # last scan at 0: scans
    env.sched.periodic_ops(1015.0)  # 15 s later: not yet
    env.sched.periodic_ops(1020.0)  # exactly 20 s: "now > last + interval" is false
    assert _scans(env) == 1
    env.sched.periodic_ops(1020.5)
    assert _scans(env) == 2


def test_negative_ring_scan_interval_disables_the_scan(env, caplog):
    env.settings.ring_scan_interval = -1
    env.add(5).input_finds_work = True
    with caplog.at_level(logging.DEBUG):
        env.sched.periodic_ops(1000.0)
    assert env.process.calls == [] and "Looking up domid" not in caplog.text
    assert "periodic_ops starting" in caplog.text


def test_statistics_are_logged_at_most_every_120_seconds(env, caplog):
    with caplog.at_level(logging.INFO):
        env.sched.periodic_ops(1000.0)
        env.sched.periodic_ops(1100.0)
        env.sched.periodic_ops(1120.5)
    assert caplog.text.count("Transaction conflict statistics for last") == 2
    assert "Transaction conflict statistics for last 120.5 seconds:" in caplog.text
    assert "store stat: nodes(6) t-abort(0) t-coalesce(0)" in caplog.text


# -- the poll timeout (xenstored.ml: main_loop (its timeout)) ------------------------------------------

def test_timeout_is_zero_while_a_peaceful_domain_has_more_work(env):
    assert env.sched.compute_timeout(1000.0, True) == 0.0


def test_idle_timeout_is_the_periodic_period_or_until_periodic_work_is_due(env):
    env.sched.period_start = 1000.0
    assert env.sched.compute_timeout(1000.0, False) == PERIOD_OPS_INTERVAL
    assert env.sched.compute_timeout(1010.0, False) == pytest.approx(5.0)
    assert env.sched.compute_timeout(1020.0, False) == 0.001  # overdue: wake at once


def test_timeout_shrinks_to_the_frequent_ops_period_while_conflict_credit_is_owed(env):
    env.add(5)
    env.doms.decr_conflict_credit(env.doms.find(5))
    env.sched.period_start = 1000.0
    env.sched.next_frequent_ops = 1000.05
    assert env.sched.compute_timeout(1000.0, False) == pytest.approx(0.05)


def test_a_domain_holding_io_credit_is_polled(env):
    env.sched.period_start = 1000.0
    env.add(5, credit=3)
    assert env.sched.compute_timeout(1000.0, False) == CREDIT_POLL_INTERVAL


def test_a_bad_domain_holding_credit_is_not_polled(env):
    env.sched.period_start = 1000.0
    env.add(5, credit=3).dom.mark_as_bad()
    assert env.sched.compute_timeout(1000.0, False) == PERIOD_OPS_INTERVAL


# -- event channel (event.ml, domains.ml: cleanup) ---------------------------------------------------

def test_a_notification_gives_its_domain_one_credit_and_unmasks_the_port(env):
    con = env.add(5)
    port = con.dom.get_local_port()
    env.handle.queue.append(port)
    env.sched.handle_eventchn()
    assert con.dom.io_credit == 1 and env.handle.unmasked == [port]


def test_a_notification_on_an_unknown_port_raises_but_is_unmasked(env):
    env.handle.queue.append(99)
    with pytest.raises(KeyError):
        env.sched.handle_eventchn()
    assert env.handle.unmasked == [99]


def test_every_queued_port_is_taken_in_one_iteration_each_once(env):
    a, b = env.add(5), env.add(6)
    pa, pb = a.dom.get_local_port(), b.dom.get_local_port()
    env.handle.queue.extend([pa, pb])
    env.sched.handle_eventchn()
    assert env.handle.queue == [] and env.sched.deferred_ports == []
    assert a.dom.io_credit == 1 and b.dom.io_credit == 1
    assert env.handle.unmasked == [pa, pb]


def test_a_port_read_twice_is_handled_again_on_the_next_iteration(env):
    # Xen would queue it again only after its unmask: not in the same read.
    a, b, c = env.add(5), env.add(6), env.add(7)
    pa, pb, pc = (x.dom.get_local_port() for x in (a, b, c))
    env.handle.queue.extend([pa, pb, pa, pc, pa])
    env.sched.handle_eventchn()
    assert env.handle.queue == [] and env.sched.deferred_ports == [pa]
    assert (a.dom.io_credit, b.dom.io_credit, c.dom.io_credit) == (1, 1, 1)
    env.sched.handle_eventchn()
    assert env.sched.deferred_ports == []
    assert (a.dom.io_credit, b.dom.io_credit, c.dom.io_credit) == (2, 1, 1)
    assert env.handle.unmasked == [pa, pb, pc, pa]


def test_an_iteration_holding_a_deferred_port_does_not_sleep_and_handles_it(env):
    env.sched.period_start = env.clock.now
    con = env.add(5)
    port = con.dom.get_local_port()
    env.handle.queue.extend([port, port])
    env.sched.handle_eventchn()
    assert env.sched.deferred_ports == [port] and env.handle.queue == []
    with mock.patch.object(env.sched.selector, "select", wraps=env.sched.selector.select) as sel:
        env.sched.main_loop()
    assert sel.call_args[0][0] == 0.0
    assert env.sched.deferred_ports == [] and env.handle.unmasked == [port, port]


def test_a_deferred_port_unbound_since_is_dropped(env):
    con = env.add(5)
    port = con.dom.get_local_port()
    env.handle.queue.extend([port, port])
    env.sched.handle_eventchn()
    del env.cons.ports[port]  # the domain was released meanwhile
    env.sched.handle_eventchn()
    assert env.sched.deferred_ports == [] and env.handle.unmasked == [port]


def test_at_most_evtchn_batch_events_are_taken_per_iteration(env):
    con = env.add(5)
    port = con.dom.get_local_port()
    env.handle.queue.extend([port] * (EVTCHN_BATCH + 3))
    env.sched.handle_eventchn()
    assert len(env.handle.queue) == 3 and env.sched.deferred_ports == [port]
    assert con.dom.io_credit == 1


def test_an_unknown_port_among_others_raises_after_the_rest_are_handled(env):
    con = env.add(5)
    port = con.dom.get_local_port()
    env.handle.queue.extend([99, port])
    with pytest.raises(KeyError):
        env.sched.handle_eventchn()
    assert con.dom.io_credit == 1 and env.handle.unmasked == [99, port]


def test_dom_exc_queued_twice_fires_release_domain_once(env):
    env.add(0)
    env.add(5)
    env.hv.states[5].dying = True
    env.handle.queue.extend([env.sched.event.domexc] * 2)
    env.sched.handle_eventchn()
    env.sched.handle_eventchn()
    # the second finds no domain dead any more: nothing more fires
    assert env.cons.deleted == [5] and env.cons.fired == ["@releaseDomain"]


def test_dom_exc_removes_dead_domains_and_fires_release_domain_once(env):
    env.add(0)
    env.add(5)
    env.add(6)
    env.add(7)
    env.hv.states[5].dying = True
    del env.hv.states[6]
    env.hv.states[7].shutdown = True
    env.handle.queue.append(env.sched.event.domexc)
    env.sched.handle_eventchn()
    assert sorted(env.store.reset) == [5, 6] and sorted(env.cons.deleted) == [5, 6]
    assert env.cons.fired == ["@releaseDomain"]
    assert env.handle.unmasked == [env.sched.event.domexc]
    assert env.doms.exist(7) and env.doms.exist(0)


def test_dom_exc_with_every_domain_running_fires_nothing(env):
    env.add(0)
    env.add(5)
    env.handle.queue.append(env.sched.event.domexc)
    env.sched.handle_eventchn()
    assert env.cons.fired == [] and env.cons.deleted == []


# -- one iteration --------------------------------------------------------------------

def test_an_iteration_credits_domains_with_more_work_and_serves_them_at_once(env):
    env.sched.period_start = env.clock.now
    con = env.add(5)
    con.more_work, con.ring = True, 1
    periodic = []
    env.sched.periodic_ops = periodic.append
    env.sched.main_loop()  # timeout 0: no periodic work on this iteration
    # the request, then the empty read that ends the work (both in this iteration)
    assert env.process.calls == [("in", 5), ("out", 5)] * 2
    assert periodic == [] and con.dom.io_credit == 0


def test_a_conflict_paused_domain_with_more_work_gets_no_credit(env):
    env.sched.period_start = env.clock.now
    con = env.add(5)
    con.more_work = True
    for _ in range(5):  # paused: queued, and the poll shrinks to the frequent-ops period
        env.doms.decr_conflict_credit(con.dom)
    assert con.dom.is_paused_for_conflict()
    env.sched.periodic_ops = lambda now: None
    env.sched.main_loop()
    assert env.process.calls == [] and con.dom.io_credit == 0


def test_periodic_work_runs_on_an_iteration_with_a_timeout_once_15_s_have_passed(env):
    periodic = []
    env.sched.periodic_ops = periodic.append
    env.sched.period_start = env.clock.now - PERIOD_OPS_INTERVAL - 1  # overdue: 1 ms poll
    env.sched.main_loop()
    assert periodic == [env.clock.now] and env.sched.period_start == env.clock.now


def test_frequent_ops_trim_history_and_pay_conflict_credit(env):
    env.add(5)
    dom = env.doms.find(5)
    env.doms.decr_conflict_credit(dom)
    env.sched.next_frequent_ops = env.clock.now - 1
    env.sched.frequent_ops()
    assert env.history.trims == 1 and dom.conflict_credit == 5.0
    assert env.sched.next_frequent_ops == pytest.approx(env.clock.now + 0.05)
    env.sched.frequent_ops()  # not due again yet
    assert env.history.trims == 1


# -- the credit poll (oxsd's latency change; scheduler.py docstring) ------------------

def test_a_credit_poll_that_finds_nothing_keeps_the_credit_and_backs_off(env):
    env.add(5, credit=3)
    for _ in range(12):
        env.sched.process_domains(polled=True)
    assert env.doms.find(5).io_credit == 3
    assert env.sched.credit_poll == CREDIT_POLL_MAX
    assert env.sched.compute_timeout(env.sched.period_start + 1, False) == CREDIT_POLL_MAX


def test_a_credit_poll_that_finds_work_spends_credit_and_polls_fast_again(env):
    con = env.add(5, credit=3)
    env.sched.process_domains(polled=True)
    assert env.sched.credit_poll == 2 * CREDIT_POLL_INTERVAL
    con.input_finds_work = True  # the lazy guest wrote a request
    env.sched.process_domains(polled=True)
    assert env.doms.find(5).io_credit == 2 and env.sched.credit_poll == CREDIT_POLL_INTERVAL


def test_rounds_on_iterations_woken_by_other_work_spend_credit_as_in_the_original(env):
    env.add(5, credit=2)
    env.sched.process_domains(polled=False)
    env.sched.process_domains(polled=False)
    assert env.doms.find(5).io_credit == 0


# -- the busy poll before sleeping (oxsd's latency change; Scheduler._poll_then_sleep) ----

class RecordingSelector:
    """A selector that records each select's timeout and answers from a script (else nothing)."""

    def __init__(self, answers: Optional[Dict[int, list]] = None) -> None:
        self.timeouts: List[float] = []
        self.answers = answers or {}

    def select(self, timeout: Optional[float] = None) -> list:
        self.timeouts.append(timeout)
        return self.answers.get(len(self.timeouts), [])

    def close(self) -> None:
        pass


def test_after_serving_a_guest_the_loop_polls_before_it_sleeps(env):
    con = env.add(5, credit=0)  # its more work earns the one credit that serves it
    con.more_work, con.ring = True, 1
    env.sched.selector = sel = RecordingSelector()
    env.sched.main_loop()  # more work: a select that does not sleep, then the request
    assert sel.timeouts == [0.0]
    assert env.process.calls == [("in", 5), ("out", 5)] * 2
    sel.timeouts.clear()
    env.sched.main_loop()
    polls, sleep = sel.timeouts[:-1], sel.timeouts[-1]
    assert polls and set(polls) == {0.0}  # polled for up to busy-poll-us...
    assert sleep > 0.0  # ...then slept as it would have
    sel.timeouts.clear()
    env.sched.main_loop()  # that iteration served nothing: it sleeps at once
    assert len(sel.timeouts) == 1 and sel.timeouts[0] > 0.0


def test_the_poll_returns_what_it_finds_without_sleeping(env):
    ready = [("key", 1)]
    env.sched.selector = sel = RecordingSelector({3: ready})
    env.sched.busy_poll_ns = 10**12  # only the answer can end it
    assert env.sched._poll_then_sleep(5.0) == ready
    assert sel.timeouts == [0.0, 0.0, 0.0]


def test_a_poll_that_finds_nothing_ends_after_busy_poll_us_and_sleeps(env):
    env.sched.selector = sel = RecordingSelector()
    env.sched.busy_poll_ns = 0  # the deadline has passed at the first check
    assert env.sched._poll_then_sleep(5.0) == []
    assert sel.timeouts == [0.0, 5.0]


def test_busy_poll_us_zero_or_a_single_cpu_turns_the_poll_off(env):
    settings = Settings()
    with mock.patch("oxsd.scheduler.os.cpu_count", return_value=2):
        assert busy_poll_ns(settings) == 50_000
        settings.busy_poll_us = 0
        assert busy_poll_ns(settings) == 0
    settings.busy_poll_us = 50
    for cpus in (1, None):  # the client could not run while the daemon polls
        with mock.patch("oxsd.scheduler.os.cpu_count", return_value=cpus):
            assert busy_poll_ns(settings) == 0


def test_without_busy_poll_a_served_iteration_sleeps_at_once(env):
    con = env.add(5, credit=1)
    con.more_work, con.ring = True, 1
    env.sched.busy_poll_ns = 0
    env.sched.selector = sel = RecordingSelector()
    env.sched.main_loop()
    env.sched.main_loop()
    assert sel.timeouts[0] == 0.0 and len(sel.timeouts) == 2 and sel.timeouts[1] > 0.0
