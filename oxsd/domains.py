"""The registry of introduced domains and the conflict-credit queues (port of domains.ml).

Conflict credit (domains.ml: decr_conflict_credit): a domain whose commits make other domains'
transactions fail loses a point per conflict; at zero it is paused (its
ring is not served) until `frequent_ops` pays credit back, one point per
`conflict-max-history-seconds`, to the first domain queued (aggregate mode)
or to every domain (individual mode).
"""
from __future__ import annotations

import errno
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from .define import InvalidArgument
from .domain import Domain
from .ocaml_hashtbl import Hashtbl
from .utils import format_float

if TYPE_CHECKING:
    from .config import Settings
    from .event import Event

log = logging.getLogger("oxsd.domains")


class _Slot:
    """A queue entry that can be cleared when its domain goes away."""

    __slots__ = ("dom",)

    def __init__(self, dom: Optional[Domain]) -> None:
        self.dom = dom


class Domains:
    def __init__(self, eventchn: "Event", hv: Any, settings: "Settings",
                 on_first_conflict_pause: Callable[[], None]) -> None:
        self.eventchn = eventchn
        self.hv = hv  # hypervisor backend: map_foreign, domain_getinfo, map_file
        self.settings = settings
        # Hashtbl.create 10 in the original: iterations (clean-up, ring scan,
        # credit refill) go in its bucket order, which their log lines show
        self.table: Hashtbl[int, Domain] = Hashtbl(10)
        # Domains with io_credit > 0 (maintained by Domain's credit methods):
        # the main loop serves these without looking at every domain.
        self.credited: Dict[int, Domain] = {}
        self._order: Dict[int, int] = {}  # domid -> insertion rank in table
        self._seq = itertools.count()
        self.doms_conflict_paused: Deque[_Slot] = deque()
        self.doms_with_conflict_penalty: Deque[_Slot] = deque()
        self.on_first_conflict_pause = on_first_conflict_pause
        self.n_paused = 0
        self.n_penalised = 0

    def dele(self, domid: int) -> None:
        dom = self.table.pop(domid, None)
        if dom is not None:
            self.untrack(dom)

    def untrack(self, dom: Domain) -> None:
        """Stop following a domain that left the table."""
        if self.credited.get(dom.id) is dom:
            del self.credited[dom.id]
        self._order.pop(dom.id, None)
        dom.credited = None

    def _add(self, dom: Domain) -> None:
        old = self.table.get(dom.id)
        if old is not None:
            self.untrack(old)
        dom.credited = self.credited
        self.table[dom.id] = dom
        self._order[dom.id] = next(self._seq)
        if dom.io_credit > 0:
            self.credited[dom.id] = dom

    def served_in_order(self) -> List[Domain]:
        """Domains holding io credit, in table order (the order process_domains serves them)."""
        credited = self.credited
        if len(credited) <= 1:
            return list(credited.values())
        order = self._order
        return sorted(credited.values(), key=lambda d: order[d.id])

    def exist(self, domid: int) -> bool:
        return domid in self.table

    def find(self, domid: int) -> Domain:
        return self.table[domid]

    def number(self) -> int:
        return len(self.table)

    def iter(self) -> List[Domain]:
        return list(self.table.values())

    @staticmethod
    def _is_empty_queue(q: Deque[_Slot]) -> bool:
        while q and q[0].dom is None:
            q.popleft()
        return not q

    def all_at_max_credit(self) -> bool:
        if self.settings.conflict_rate_limit_is_aggregate:
            if not self.doms_with_conflict_penalty and not self.doms_conflict_paused:
                return True  # the usual case, without the two calls
            return (self._is_empty_queue(self.doms_with_conflict_penalty)
                    and self._is_empty_queue(self.doms_conflict_paused))
        return self.n_penalised == 0

    @staticmethod
    def _remove_from_queue(dom: Domain, q: Deque[_Slot]) -> None:
        """Never removes anything: raises if `dom` is queued [quirk].

        The original tests each entry with OCaml's structural equality,
        which compares the two records field by field (id, then mfn) and
        raises on reaching the ring mapping, an abstract value, whenever
        both match: always for the domain itself.  The exception ends the
        clean-up (no permission reset, no @releaseDomain) and the loop
        iteration; the queue keeps the entry.
        """
        for slot in q:
            x = slot.dom
            if x is not None and x.id == dom.id and x.mfn == dom.mfn:
                raise InvalidArgument("compare: abstract value")

    def cleanup(self) -> Tuple[bool, List[int]]:
        """After VIRQ_DOM_EXC: (some domain shut down, ids of dead domains), dead ones closed."""
        notify = False
        dead: List[int] = []
        for domid in list(self.table):
            if domid == 0:
                continue
            try:
                info = self.hv.domain_getinfo(domid)
            except Exception as exc:
                # Only a domain that does not exist is dead: a failing hypercall
                # (EPERM, EFAULT, ENOMEM, ...) or a bug here must not tear down a
                # live guest's connection (deviation: domains.ml takes any Xenctrl.Error).
                if not (isinstance(exc, OSError) and exc.errno == errno.ESRCH):
                    log.warning("Domain %u: no domain info (%s): kept for now", domid, exc)
                    continue
                log.debug("Domain %u died -- no domain info", domid)
                dead.insert(0, domid)
                continue
            if info.shutdown or info.dying:
                log.debug("Domain %u died (dying=%s, shutdown %s -- code %d)", domid,
                          str(info.dying).lower(), str(info.shutdown).lower(), info.shutdown_code)
                if info.dying:
                    dead.insert(0, domid)
                else:
                    notify = True
        limit = self.settings.conflict_burst_limit
        for domid in dead:
            dom = self.table.pop(domid)
            self.untrack(dom)
            dom.close()
            if dom.conflict_credit <= limit:
                self._remove_from_queue(dom, self.doms_with_conflict_penalty)
                if dom.conflict_credit <= 0.0:
                    self._remove_from_queue(dom, self.doms_conflict_paused)
        return notify, dead

    def resume(self, domid: int) -> None:
        pass

    def create(self, domid: int, mfn: int, *, remote_port: int,
               local_port: Optional[int] = None) -> Domain:
        interface = self.hv.map_ring(domid, mfn)
        try:
            dom = Domain.make(domid, mfn, interface, self.eventchn, remote_port=remote_port,
                              local_port=local_port,
                              conflict_burst_limit=self.settings.conflict_burst_limit)
        except BaseException:
            close = getattr(interface, "close", None)
            if close is not None:
                close()
            raise
        self._add(dom)
        return dom

    def create0(self, local_port: Optional[int] = None) -> Domain:
        """dom0's own ring: the page in `xenstored-kva`, the port in `xenstored-port`."""
        remote_port = self.hv.read_port_file(self.settings.xenstored_port)
        interface = self.hv.map_file(self.settings.xenstored_kva)
        dom = Domain.make(0, 0, interface, self.eventchn, remote_port=remote_port,
                          local_port=local_port,
                          conflict_burst_limit=self.settings.conflict_burst_limit)
        self._add(dom)
        dom.notify()
        return dom

    # -- conflict credit -----------------------------------------------
    def decr_conflict_credit(self, dom: Domain) -> None:
        dom.caused_conflicts += 1
        before = dom.conflict_credit
        after = max(-1.0, before - 1.0)
        log.debug("decr_conflict_credit dom%d %s -> %s", dom.id, format_float(before),
                  format_float(after))
        dom.conflict_credit = after
        limit = self.settings.conflict_burst_limit
        newly_penalised = before >= limit and after < limit
        newly_paused = before > 0.0 and after <= 0.0
        if self.settings.conflict_rate_limit_is_aggregate:
            if newly_penalised and after > 0.0:
                self.doms_with_conflict_penalty.append(_Slot(dom))
            elif newly_paused:
                first_pause = not self.doms_conflict_paused
                self.doms_conflict_paused.append(_Slot(dom))
                if first_pause:
                    self.on_first_conflict_pause()
        else:
            if newly_penalised:
                self.n_penalised += 1
            if newly_paused:
                self.n_paused += 1
                if self.n_paused == 1:
                    self.on_first_conflict_pause()

    def _incr_conflict_credit_from_queue(self) -> None:
        limit = self.settings.conflict_burst_limit

        def process_queue(q: Deque[_Slot], requeue) -> bool:
            while q and q[0].dom is None:
                q.popleft()
            if not q:
                return False
            d = q.popleft().dom
            before = d.conflict_credit
            d.conflict_credit = min(d.conflict_credit + 1.0, limit)
            log.debug("incr_conflict_credit_from_queue: dom%d: %s -> %s", d.id,
                      format_float(before), format_float(d.conflict_credit))
            if requeue(d.conflict_credit):
                q.append(_Slot(d))
            return True

        if not process_queue(self.doms_conflict_paused, lambda c: c <= 0.0):
            process_queue(self.doms_with_conflict_penalty, lambda c: c < limit)

    def incr_conflict_credit(self) -> None:
        if self.settings.conflict_rate_limit_is_aggregate:
            self._incr_conflict_credit_from_queue()
            return
        if self.n_penalised <= 0:
            return
        limit = self.settings.conflict_burst_limit
        for dom in self.table.values():
            before = dom.conflict_credit
            after = min(before + 1.0, limit)
            dom.conflict_credit = after
            log.debug("incr_conflict_credit dom%d: %s -> %s", dom.id, format_float(before),
                      format_float(after))
            if before <= 0.0 < after:
                self.n_paused -= 1
            if before < limit <= after:
                self.n_penalised -= 1
