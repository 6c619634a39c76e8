"""Per-domain node counts and the value-size limit (port of quota.ml).

quota.ml.  A `Quota` is immutable like the 4.17.4+ record: every update
returns a new object, so `copy()` is free and a transaction's start copy
can never be changed behind its back.  The domid -> count map is a `PMap`:
an update copies O(1) of it and a merge visits only the domids the
transaction changed, so a guest's node creation, removal or commit costs
the same whatever the number of other domains owning nodes.

Limits (`maxent`, `maxsize`, `activate`) are taken from `Settings` when the
quota is created (the store's creation, after the config file is read).

Public API:

* exceptions: `LimitReached` (EQUOTA), `DataTooBig` (E2BIG),
  `TransactionOpened` (EQUOTA) — the same classes as in `oxsd.define`
  (`QuotaLimitReached` is an alias of `LimitReached`);
* `Quota.create(settings)` / `Quota(maxent, maxsize, activate=True, cur=None)`;
* `q.to_string(domid) -> str` (CONTROL `quota`), `q.copy()`, `q.delete(id)`
  (OCaml `del`), `q.check(id, size)`, `q.add_entry(id)`, `q.del_entry(id)`,
  `Quota.merge(orig, mod, dest) -> Quota`, `q.get(id)` (count or 0);
  `q.cur` is the read-only mapping domid -> count.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping, Optional

from .define import DataTooBig, QuotaLimitReached, TransactionOpened
from .pmap import PMap
from .utils import format_u

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["LimitReached", "QuotaLimitReached", "DataTooBig", "TransactionOpened", "Quota"]

LimitReached = QuotaLimitReached

log = logging.getLogger("oxsd.quota")


class Quota:
    """maxent/maxsize limits and the current count per domid (immutable)."""

    __slots__ = ("maxent", "maxsize", "activate", "cur", "limits")

    def __init__(self, maxent: int, maxsize: int, activate: bool = True,
                 cur: Optional[Mapping[int, int]] = None, limits=None) -> None:
        self.maxent = maxent
        self.maxsize = maxsize
        self.activate = activate
        self.cur: PMap = (cur if isinstance(cur, PMap) else
                          PMap.EMPTY if cur is None else PMap.of_dict(cur))
        # Protocol level 4.22 per-domain quotas (protocol_level.DomainQuotas), shared
        # by every copy; None at level 4.17.
        self.limits = limits

    @staticmethod
    def create(settings: "Settings") -> "Quota":
        return Quota(settings.quota_maxentity, settings.quota_maxsize, settings.quota_activate)

    def _with(self, cur: PMap) -> "Quota":
        return Quota(self.maxent, self.maxsize, self.activate, cur, self.limits)

    def with_limits(self, limits) -> "Quota":
        return Quota(self.maxent, self.maxsize, self.activate, self.cur, limits)

    def to_string(self, domid: int) -> str:
        n = self.cur.get(domid)
        if n is None:
            return "dom%d quota: not set" % domid
        return "dom%d quota: %d/%d" % (domid, n, self.maxent)

    def copy(self) -> "Quota":
        return self  # immutable: sharing is copying

    def delete(self, id: int) -> "Quota":
        """Forget the count of `id` (OCaml `Quota.del`)."""
        if id not in self.cur:
            return self
        return self._with(self.cur.delete(id))

    def get(self, id: int) -> int:
        return self.cur.get(id, 0)

    def check(self, id: int, size: int) -> None:
        """E2BIG if `size > maxsize`; EQUOTA if `id > 0` has a count `>= maxent`. `id = -1`: size only."""
        if not self.activate:
            return
        limits = self.limits
        if limits is not None and id > 0 and limits.applies(id):
            limits.check_node(self, id, size)
            return
        if size > self.maxsize:
            log.warning("domain %s err create entry: data too big %d", format_u(id), size)
            raise DataTooBig()
        if id > 0:
            entry = self.cur.get(id)
            if entry is not None and entry >= self.maxent:
                log.warning("domain %s cannot create entry: quota reached", format_u(id))
                raise QuotaLimitReached()

    def _update_entry(self, id: int, diff: int) -> "Quota":
        return self._with(_updated(self.cur, id, diff))

    def del_entries(self, counts: Mapping[int, int]) -> "Quota":
        """`del_entry` `counts[id]` times for each id, in one update per id."""
        cur = self.cur
        for id, n in counts.items():
            cur = _updated(cur, id, -n)
        return self._with(cur)

    def del_entry(self, id: int) -> "Quota":
        return self._update_entry(id, -1)

    def add_entry(self, id: int) -> "Quota":
        return self._update_entry(id, +1)

    @staticmethod
    def merge(orig: "Quota", mod: "Quota", dest: "Quota") -> "Quota":
        """dest + (mod - orig), visiting only the domids present in `mod` [quirk: a count
        that dropped to 0 in `mod` is absent, so its decrease is lost]."""
        cur = dest.cur
        orig_cur = orig.cur
        for id, nb in mod.cur.changed_against(orig_cur):
            diff = nb - orig_cur.get(id, 0)
            if diff != 0:
                cur = _updated(cur, id, diff)
        return dest if cur is dest.cur else dest._with(cur)

    def __repr__(self) -> str:
        return "Quota(maxent=%d, maxsize=%d, activate=%r, cur=%r)" % (
            self.maxent, self.maxsize, self.activate, dict(self.cur))


def _updated(cur: PMap, id: int, diff: int) -> PMap:
    nb = diff + cur.get(id, 0)
    if nb == 0:
        return cur.delete(id) if id in cur else cur
    return cur.set(id, nb)
