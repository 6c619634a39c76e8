"""The main loop: who is served when (port of xenstored.ml's main_loop and its helpers).

One thread owns the store, every connection and this loop, so the order of
replies and watch events is the order the loop produces them.

Policy, as in oxenstored 4.17 (xenstored.ml: process_domains, main_loop):

* sockets are polled: a readable fd gets one input step, a writable fd one
  output packet, per iteration (a socket holding input already read into
  its buffer, `Xb.has_buffered_input`, counts as readable);
* rings are not polled.  A domain is served (one input step and one output
  packet) on an iteration only while its `io_credit > 0`; credit comes from
  its event channel (+1 per notification), from the loop while the
  connection has more work (+1 per iteration), and from the ring scan
  (`32 + 2 x ndomains` for a lazy domain found with work);
* `frequent_ops` trims history and pays conflict credit every
  `conflict-max-history-seconds`; `periodic_ops` runs at most every 15 s on
  iterations with a non-zero timeout and runs the ring scan when
  `ring-scan-interval` (default 20, negative disables) has passed.

Changes on latency and cost that a client cannot otherwise observe: a
domain served on an iteration also gets, at once, the rounds the original
would give it on the following iterations while it has more work (up to
RING_BATCH, credit as in the original; `serve_domain`), notifying its guest
once for the whole batch; the event channel's queued events are all read
in one iteration, each port handled once and a port read twice again on
the next iteration (`handle_eventchn`); the loop wakes when periodic work
is due (the original may sleep 15 s past it), and while a domain holds io
credit the loop polls, from `CREDIT_POLL_INTERVAL` backing off to
`CREDIT_POLL_MAX`, instead of sleeping up to 15 s (the original served a
lazy guest's follow-up requests only when something else woke the loop).
A polled round that finds nothing to do does not spend the credit: like
the original's sleeping loop, a lazy guest keeps its rounds until they do
work or other activity uses them up.  After an iteration that served
requests, the loop polls for up to `busy-poll-us` before it sleeps
(`_poll_then_sleep`), so that a client's next request finds it awake.

Only domains holding credit (`Domains.credited`) and domain connections
that may have more work (`Connections.active`) are looked at per
iteration, so idle introduced domains cost nothing.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from .store import Path
from .utils import format_float
from .xb.xb import PEEK_DATA, PEEK_EOF, EndOfFile

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection
    from .connections import Connections
    from .domains import Domains
    from .event import Event
    from .process import Process
    from .store import Store

log = logging.getLogger("oxsd.xenstored")

PERIOD_OPS_INTERVAL = 15.0
# How often a domain holding io credit is looked at when nothing else wakes the loop.
CREDIT_POLL_INTERVAL = 0.005
# Each credit poll that finds nothing to do doubles the interval, up to this.
CREDIT_POLL_MAX = 1.0
# Requests already waiting in one socket that are served in one iteration.
SOCKET_BATCH = 16
# In a socket batch, the replies gathered so far go out after its 1st, (1 + SEND_EVERY)th,
# ... request, and at its end (serve_socket).
SEND_EVERY = 4
# Rounds (input step + output packet) a domain with more work gets in one iteration.
RING_BATCH = 16
# Event-channel events read in one iteration (each port handled once: handle_eventchn).
EVTCHN_BATCH = 64
ACCEPT_BATCH = 64

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE


def busy_poll_ns(settings: "Settings") -> int:
    """`busy-poll-us` in ns; 0 on a host with one CPU, where polling would keep the client
    it waits for from running."""
    us = settings.busy_poll_us
    if us <= 0 or (os.cpu_count() or 1) < 2:
        return 0
    return us * 1000


class Scheduler:
    def __init__(self, *, store: "Store", cons: "Connections", doms: Optional["Domains"],
                 process: "Process", settings: "Settings", history,
                 listen_sock: Optional[socket.socket], event: Optional["Event"],
                 poll_evtchn: bool, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.cons = cons
        self.doms = doms
        self.process = process
        self.settings = settings
        self.history = history
        self.listen_sock = listen_sock
        self.event = event
        self.clock = clock
        self.quit = False
        self.selector = selectors.DefaultSelector()
        self._masks: Dict[int, int] = {}  # fd -> mask currently registered
        self.next_frequent_ops = 0.0
        self.credit_poll = CREDIT_POLL_INTERVAL  # current interval of the credit poll
        # Ports read more than once in one iteration, handled again on the next (handle_eventchn).
        self.deferred_ports: List[int] = []
        self.busy_poll_ns = busy_poll_ns(settings)
        self.served = False  # this iteration served requests (a guest's round, a socket's)
        self.last_scan_time = 0.0
        self.last_stat_time = 0.0
        self.period_start = 0.0
        self.pending_signals: List[int] = []
        self.signal_handlers: Dict[int, Callable[[], None]] = {}
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self.selector.register(self._wakeup_r, _EVENT_READ, "wakeup")
        if listen_sock is not None:
            self.selector.register(listen_sock, _EVENT_READ, "listen")
        if event is not None and poll_evtchn:
            self.selector.register(event.fd(), _EVENT_READ, "evtchn")

    # -- timers ---------------------------------------------------------
    def advance_next_frequent_ops(self) -> None:
        self.next_frequent_ops = self.clock() + self.settings.conflict_max_history_seconds

    def frequent_ops(self) -> None:
        if self.clock() > self.next_frequent_ops:
            self.history.trim()
            if self.doms is not None:
                self.doms.incr_conflict_credit()
            self.advance_next_frequent_ops()

    # -- signals (handled in the loop, not in the handler) ----------------
    def install_signal(self, signum: int, handler: Callable[[], None]) -> None:
        self.signal_handlers[signum] = handler
        signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)

    def _on_signal(self, signum, _frame) -> None:
        self.pending_signals.append(signum)

    def _run_pending_signals(self) -> None:
        try:
            while self._wakeup_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.pending_signals:
            signum = self.pending_signals.pop(0)
            self.signal_handlers[signum]()

    # -- one iteration ----------------------------------------------------
    def _is_peaceful(self, con: "Connection") -> bool:
        dom = con.dom
        return dom is None or dom.conflict_credit > 0.0

    def _update_interest(self) -> List["Connection"]:
        """Register each socket for what it can do now (can_input / has_output).

        Returns the sockets that may input and already hold input read from
        the socket but not parsed (`Xb.has_buffered_input`): they are served
        as readable, since their socket may no longer be.
        """
        sel = self.selector
        masks = self._masks
        buffered: List["Connection"] = []
        for fd, con in self.cons.anonymous.items():
            # Connection.can_input / has_output, read off the Xb (every socket, every iteration)
            xb = con.xb
            q = xb._q
            mask = 0
            if (len(q) < xb._qcap and xb._counts[0] < xb._maxout
                    and not con.pending_source_watchevents.q):
                mask = _EVENT_READ
                backend = xb.backend
                if backend._roff < len(backend._rbuf):  # has_buffered_input
                    buffered.append(con)
            if q or xb._out_off < len(xb._out):
                mask |= _EVENT_WRITE
            old = masks.get(fd, 0)
            if mask == old:
                continue
            if old == 0:
                sel.register(fd, mask, con)
            elif mask == 0:
                sel.unregister(fd)
            else:
                sel.modify(fd, mask, con)
            if mask:
                masks[fd] = mask
            else:
                masks.pop(fd, None)
        return buffered

    def _forget(self, fd: int) -> None:
        if self._masks.pop(fd, 0):
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _domains_hold_credit(self) -> bool:
        if self.doms is None:
            return False
        for dom in self.doms.credited.values():
            if not dom.bad_client and dom.conflict_credit > 0.0:
                return True
        return False

    def compute_timeout(self, now: float, peaceful_mw: bool) -> float:
        if peaceful_mw:
            return 0.0
        if self.doms is None or self.doms.all_at_max_credit():
            timeout = PERIOD_OPS_INTERVAL
        else:
            timeout = min(max(0.0, self.next_frequent_ops - now), PERIOD_OPS_INTERVAL)
        # Wake when periodic work is due rather than up to 15 s after.
        until_periodic = self.period_start + PERIOD_OPS_INTERVAL - now
        if until_periodic < timeout:
            timeout = max(until_periodic, 0.001)
        if timeout > self.credit_poll and self._domains_hold_credit():
            timeout = self.credit_poll
        return timeout

    def main_loop(self) -> None:
        if self.clock() > self.next_frequent_ops:
            self.frequent_ops()
        mw = self.cons.has_more_work()
        peaceful_mw = [c for c in mw if self._is_peaceful(c)] if mw else mw
        for c in peaceful_mw:
            c.dom.incr_io_credit()
        start = self.clock()
        timeout = self.compute_timeout(start, bool(peaceful_mw))
        buffered = self._update_interest()
        deferred = bool(self.deferred_ports)
        # Buffered input (or a deferred event) is input waiting: do not sleep (`timeout`
        # still decides the periodic work, as it would with the bytes in the socket).
        wait = 0.0 if buffered or deferred else timeout
        try:
            if wait and self.served and self.busy_poll_ns:
                ready = self._poll_then_sleep(wait)
            else:
                ready = self.selector.select(wait)
        except InterruptedError:
            ready = []
        self.served = False
        readable: List["Connection"] = []
        writable: List["Connection"] = []
        accept = evtchn = False
        for key, events in ready:
            data = key.data
            if data == "wakeup":
                self._run_pending_signals()
            elif data == "listen":
                accept = True
            elif data == "evtchn":
                evtchn = True
            else:
                if events & _EVENT_READ:
                    readable.append(data)
                if events & _EVENT_WRITE:
                    writable.append(data)
        for con in buffered:
            if con not in readable:
                readable.append(con)
        if accept:
            self.accept_connection()
        if evtchn or deferred:
            self.handle_eventchn()
        if readable or writable:
            self.process_connection_fds(readable, writable)
        if timeout != 0.0:
            now = self.clock()
            if now > self.period_start + PERIOD_OPS_INTERVAL:
                self.period_start = now
                self.periodic_ops(now)
        # woken by nothing but the credit poll: see process_domains
        self.process_domains(polled=not (ready or buffered or deferred)
                             and timeout == self.credit_poll)

    def _poll_then_sleep(self, timeout: float) -> list:
        """Poll (select without sleeping) for up to busy_poll_ns; then select(timeout).

        Called after an iteration that served requests: the client (or
        guest) answered is likely to send its next request within tens of
        microseconds.  A loop that sleeps at once is woken for it, and the
        wake-up costs more than the wait: at one request in flight the
        daemon slept and was woken on nearly every request (0.98 context
        switches per request under PyPy, `bench/probe_syscalls.py`).  With
        50 us of polling, PyPy's ring READ x1 went from 0.88 to 2.99 of the
        original and WRITE x1 from 0.83 to 1.60, with less daemon CPU per
        request; CPython's socket WRITE x1 from 0.71 to 1.08 and READ x1 from
        1.08 to 2.08 (bench/README.md has the runs).  The poll is bounded per
        iteration and only follows served requests, so an idle daemon still
        sleeps at once; Linux's net.core.busy_poll makes the same trade and
        suggests the same 50 us.
        """
        select = self.selector.select
        deadline = time.perf_counter_ns() + self.busy_poll_ns
        while True:
            ready = select(0.0)
            if ready:
                return ready
            if time.perf_counter_ns() >= deadline:
                return select(timeout)

    # -- special fds ------------------------------------------------------
    def accept_connection(self) -> None:
        """Accept what is waiting (the original takes one per iteration).

        The backlog is 1, as in the original; a Python loop iteration is
        slower than OCaml's, so taking only one would make concurrent
        clients with non-blocking connects see EAGAIN.
        """
        for _ in range(ACCEPT_BATCH):
            try:
                csock, _ = self.listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            csock.setblocking(True)
            log.debug("new connection through socket")
            self.cons.add_anonymous(csock)

    def handle_eventchn(self) -> None:
        """Take the pending events (up to EVTCHN_BATCH) and handle each port once.

        The original takes one event per iteration (xenstored.ml:
        handle_eventchn).  Xen queues a port for the daemon once and masks
        it until the daemon unmasks it (`_handle_port`, before the domain is
        served), so one read of /dev/xen/evtchn gives each port at most once
        and a port notified again comes back on a later iteration.  Here
        every event already queued is read at once and each port handled
        once; a port read more than once (the simulated channel queues
        every notification) is handled again on the next iteration, which
        does not sleep: as Xen would deliver it after its unmask.  One event
        per iteration starved busy guests beside batched sockets
        (bench_load, 200 guests and 20 sockets: guests 8,718 -> 2,565
        requests/s, same run); treating the repeats as one made the loop
        sleep before a guest's next request and pay a wake-up for it
        (bench_ring READ x1 0.65 of the original, 0.94 with the repeat
        handled on the next iteration, same run).  Each port is unmasked
        after it is handled; an unknown port raises KeyError (as the
        original's Not_found) once every port taken is handled.
        """
        event = self.event
        bound = self.cons.ports  # a deferred port may have been unbound since (a release)
        ports = [port for port in self.deferred_ports if port == event.domexc or port in bound]
        repeated: List[int] = []
        for _ in range(EVTCHN_BATCH):
            port = event.pending()
            if port is None:
                break
            if port not in ports:
                ports.append(port)
            elif port not in repeated:
                repeated.append(port)
        self.deferred_ports = repeated
        failed: Optional[BaseException] = None
        for port in ports:
            try:
                self._handle_port(port)
            except Exception as exn:
                if failed is None:
                    failed = exn
        if failed is not None:
            raise failed

    def _handle_port(self, port: int) -> None:
        event = self.event
        log.debug("pending port %d", port)
        try:
            if port == event.domexc:
                self.handle_dom_exc()
            else:
                con = self.cons.find_domain_by_port(port)  # KeyError escapes, as Not_found does
                if con.dom is not None:
                    con.dom.incr_io_credit()
        finally:
            event.unmask(port)

    def handle_dom_exc(self) -> None:
        notify, dead = self.doms.cleanup()
        for domid in dead:
            self.store.reset_permissions(domid)
        for domid in dead:
            self.cons.del_domain(domid)
        if dead or notify:
            self.process.fire_spec_watches(self.store.get_root(), Path.release_domain, dead)

    # -- connections --------------------------------------------------------
    def _drop_socket(self, con: "Connection") -> None:
        fd = con.get_fd()
        self._forget(fd)
        self.cons.del_anonymous(con)

    def _socket_failed(self, con: "Connection", e: Exception, what: str) -> None:
        """Drop a socket whose `what` ("read" / "write") step raised EndOfFile or OSError."""
        self._drop_socket(con)
        if isinstance(e, EndOfFile):
            log.debug("closing socket connection")
        elif what == "write" or e.errno != errno.ECONNRESET:  # type: ignore[attr-defined]
            log.error("closing socket connection: %s error: %s", what, _strerror(e))

    def serve_socket(self, con: "Connection") -> None:
        """Input on a readable socket, then the replies it produced.

        The original reads one request per socket per iteration and writes
        its reply on a later one.  Here requests already queued in the
        socket are served in the same iteration, up to SOCKET_BATCH.  The
        replies (with the events they fired at this socket) go out in one
        non-blocking send after the batch's first request, then after every
        SEND_EVERY more, and at its end: what the socket does not take
        waits for POLLOUT.  Held to the end of the batch, the replies left a
        pipelining client idle while the batch was served and the daemon
        idle while the client answered them all; a send per reply wakes a
        client that waits for a later reply (bench_socket WRITE x8, same
        run: 0.38 of the original held, 0.44 a send per reply, 0.51 every
        4th; a pipelined transaction client 0.60 held, 0.45 / 0.46).  What
        each socket receives, and in what order, is unchanged; only the
        interleaving with other clients moves, as it would with other
        arrival times.  A peer that has closed gets no reply to its last
        request: the original reads the EOF first.
        """
        backend = con.xb.backend
        con.xb.hold_output()
        try:
            self._serve_socket_batch(con)
        finally:
            if backend.held:  # else the batch's last release sent it all
                self._release_socket(con)

    def _release_socket(self, con: "Connection") -> None:
        """Send what was gathered since hold_output (unless the socket was dropped)."""
        xb = con.xb
        if self.cons.anonymous.get(xb.backend.fd) is con:
            try:
                xb.release_output()
            except (EndOfFile, OSError) as e:
                self._socket_failed(con, e, "write")
        else:
            xb.backend.take_pending()  # dropped: nothing more goes out

    def _serve_socket_batch(self, con: "Connection") -> None:
        process = self.process
        do_input = process.do_input
        do_output_held = process.do_output_held
        xb = con.xb
        peek = xb.backend.peek
        release_output = xb.release_output
        hold_output = xb.hold_output
        what = "read"
        try:  # EOF or an I/O error drops the socket, once for the whole batch
            for i in range(SOCKET_BATCH):
                what = "read"
                do_input(con)
                state = peek()
                if state == PEEK_EOF:
                    return  # the next iteration reads the EOF and drops the connection
                what = "write"
                # Bytes the socket did not take at the last release wait for
                # POLLOUT; replies meanwhile stay in the bounded queue, so
                # can_input (quota-maxoutstanding) stops reading a client that
                # never reads, as in the original.  Gathering them behind the
                # unsent bytes would empty the queue on every batch: unbounded.
                do_output_held(con)
                more = state == PEEK_DATA and con.can_input()
                if i % SEND_EVERY == 0:  # the first reply at once: the client may wait for it
                    release_output()
                    if not more:
                        return
                    hold_output()
                elif not more:
                    return
        except (EndOfFile, OSError) as e:
            self._socket_failed(con, e, what)

    def process_connection_fds(self, readable: List["Connection"],
                               writable: List["Connection"]) -> None:
        anonymous = self.cons.anonymous
        # Sockets only: con.xb.backend.fd is con.get_fd() without the two calls.
        for con in readable:
            if anonymous.get(con.xb.backend.fd) is con:
                self.serve_socket(con)
                self.served = True
        for con in writable:
            if anonymous.get(con.xb.backend.fd) is con:
                self.flush_socket(con)

    def flush_socket(self, con: "Connection") -> None:
        """A writable socket: all it has queued goes out in one non-blocking send.

        The original writes one packet per writable socket per iteration.
        A socket batch here (serve_socket) can fire SOCKET_BATCH requests'
        events at every watcher in one iteration, so one packet per
        iteration let each watcher's queue fill up to its quota (1000
        watching sockets: +108 MiB resident, oxenstored +0.6 MiB).  The
        same bytes in the same order; what the socket does not take now
        waits for the next POLLOUT.
        """
        xb = con.xb
        xb.hold_output()
        try:
            if xb.has_old_output():  # its rest first (do_output logs the head packet then too)
                self.process.do_output(con, True)
            self.process.do_output_held(con)
        finally:
            self._release_socket(con)

    def process_domains(self, polled: bool = False) -> None:
        """Serve each domain holding io credit (`serve_domain`): a round costs a credit.

        On an iteration woken only by the credit poll (`polled`), a round
        that moved nothing keeps its credit, and when no round did anything
        the poll interval doubles (up to CREDIT_POLL_MAX); any work resets it.
        """
        if self.doms is None:
            return
        domains = self.cons.domains
        idle = True
        for dom in self.doms.served_in_order() if self.doms.credited else ():
            if dom.bad_client or dom.io_credit <= 0 or dom.conflict_credit <= 0.0:
                continue
            if self.serve_domain(dom, domains[dom.id], polled):
                idle = False
                self.served = True
        if polled and idle:
            self.credit_poll = min(self.credit_poll * 2, CREDIT_POLL_MAX)
        else:
            self.credit_poll = CREDIT_POLL_INTERVAL

    def serve_domain(self, dom, con: "Connection", polled: bool = False) -> bool:
        """One round (an input step and an output packet) for a credited domain, and its batch.

        The original serves one round per domain per iteration, paid by one
        io credit, and gives a domain +1 credit on every iteration that
        starts while it has more work (`has_more_work`, not paused).  Here,
        after the paid round, further rounds follow at once while the
        domain has more work, up to RING_BATCH in all: exactly the rounds
        the original would run on its next iterations, each earning the
        +1 that pays for it, so the credit left afterwards is the same.
        The batch stops as the original would stop serving: bad client,
        paused for conflict, no more work (its last round is the empty read
        that clears `work_again`), or the connection gone.  What the guest
        receives, and in what order, is unchanged; other connections'
        rounds move after the batch, as with other arrival times.

        The paid round notifies the guest as xb.ml does, after each step
        that moved ring data; the batch's further rounds notify it once, at
        the end (`Xb.hold_notify`): every index update is still followed by
        an event before the loop can sleep, so no wake-up is missed.  The
        first round's events wake the guest while the rest of the batch is
        served (held to the end, a guest waiting for one reply waited for
        the batch's empty last round too, and a pipelining guest took turns
        with the daemon instead of overlapping: bench_ring READ x1 0.64 ->
        0.99 of the original, READ x8 0.48 -> 0.72, same run).  The event
        after the read is not redundant either: it overlaps the guest's
        wake-up with the daemon's work on its request.  Without it (one
        event per round, after the reply) the guest received half the
        events but ring READ x1 fell from 1.02 to 0.70 of the original, the
        daemon's CPU per request rising from 63 to 72 us (same run,
        2026-12-07).

        Returns False only for a polled round that moved nothing (which
        keeps its credit, see process_domains).
        """
        do_input = self.process.do_input
        do_output = self.process.do_output
        xb = con.xb
        had_output = xb.has_output()
        do_input(con)
        do_output(con)
        xb.hold_notify()
        try:
            if polled and not (had_output or xb.has_more_input()):
                return False
            dom.decr_io_credit()
            domains = self.cons.domains
            domid = dom.id
            pipe = con.pending_source_watchevents.q  # Connection.has_more_work, one call
            for _ in range(RING_BATCH - 1):
                if (dom.bad_client or dom.conflict_credit <= 0.0
                        or domains.get(domid) is not con or not xb.has_more_work(not pipe)):
                    break
                try:
                    do_input(con)
                    do_output(con)
                except BaseException:
                    # That iteration of the original gave +1 and never took it back.
                    dom.incr_io_credit()
                    raise
            return True
        finally:
            if self.cons.domains.get(dom.id) is con:
                xb.release_notify()
            # else: released while served (its ports are unbound): nobody to wake

    # -- periodic work ------------------------------------------------------
    def ring_scan_checker(self, dom) -> None:
        if dom.io_credit > 0:
            return
        log.debug("Looking up domid %d", dom.id)
        con = self.cons.find_domain(dom.id)
        if con.has_more_work():
            return
        self.process.do_output(con)
        self.process.do_input(con)
        if con.has_more_work():
            # Work found without a notification: very likely a lazy client.
            n = 32 + 2 * self.doms.number()
            log.info("found lazy domain %d, credit %d", dom.id, n)
            dom.set_io_credit(n)
            con.counters.lazy_found += 1

    def periodic_ops(self, now: float) -> None:
        log.debug("periodic_ops starting")
        interval = self.settings.ring_scan_interval
        if self.doms is not None and interval >= 0 and now > self.last_scan_time + interval:
            self.last_scan_time = now
            for dom in self.doms.iter():
                self.ring_scan_checker(dom)
        if now > self.last_stat_time + 120.0:
            self.log_statistics(now)
        elapsed = self.clock() - now
        log.debug("periodic_ops took %s seconds.", format_float(elapsed))
        if self.quit:
            for con in self.cons.prevents_quit():
                log.warning("%s prevents live update", con.domstr)
        self.next_frequent_ops += elapsed

    def log_statistics(self, now: float) -> None:
        log.info("Transaction conflict statistics for last %s seconds:",
                 format_float(now - self.last_stat_time))
        self.last_stat_time = now
        if self.doms is not None:
            for dom in self.doms.iter():
                dom.log_and_reset_conflict_stats(
                    lambda domid, n: log.info("Dom%d caused %d conflicts", domid, n))
        txreg = self.process.txreg
        log.info("%d failed transactions; of these no culprit was found for %d",
                 txreg.failed_commits, txreg.failed_commits_no_culprit)
        txreg.reset_conflict_stats()
        nodes, aborts, coalesces = self.store.stats()
        lanon, lanon_ops, lanon_w, ldom, ldom_ops, ldom_w = self.cons.stats()
        log.info("store stat: nodes(%d) t-abort(%d) t-coalesce(%d)", nodes, aborts, coalesces)
        log.info("  con stat: anonymous(%d, %d o, %d w) domains(%d, %d o, %d w)",
                 lanon, lanon_ops, lanon_w, ldom, ldom_ops, ldom_w)


def _strerror(e: OSError) -> str:
    import os
    return e.strerror or os.strerror(e.errno or 0)
