"""Protocol level 4.22: the wire features newer than oxenstored 4.17 (opt-in).

`protocol-level = 4.17` (the default; config key or `--protocol-level`)
changes nothing: ops 22..26 are INVALID (ENOSYS), WATCH takes no depth,
the ring advertises RECONNECTION only.  `4.22` installs, with C xenstored
(xen master, tools/xenstored/) as the reference for each choice:

* XS_DIRECTORY_PART (22), for every domain (oxsd.directory_part);
* XS_GET_FEATURE / XS_SET_FEATURE (23/24) and the ring's server_features
  (domain.c do_get_feature/do_set_feature, introduce_domain): RECONNECTION
  (oxenstored's), ERROR, WATCHDEPTH, DOMID_ANY; SET_FEATURE only before the
  domain's INTRODUCE; the ring `error` field is set to XENSTORE_ERROR_RINGIDX
  when a ring's indexes are found corrupt (domain.c ignore_connection);
* DOMID_ANY (0x7ff5) in permissions: SET_PERMS from a writer with the
  feature makes the record a `perms.AnyDomainNode` (every domain matches
  its DOMID_ANY entries, core.c perm_allows_conn); from a writer without
  it the entry is ignored, and an ignored owner is ENOENT
  (domain.c domain_alloc_permrefs, core.c do_set_perms); the `@releaseDomain`
  node keeps oxenstored's `n0` (C master starts it as `n0 r<DOMID_ANY>`,
  core.c setup_structure; dom0 can set that with SET_PERMS);
* XS_GET_QUOTA / XS_SET_QUOTA (25/26): every name of C master's quota_adm,
  global and per domain, dom0 only.  Enforced: `nodes`, `watches`,
  `transactions`, `node-size`, `path-max` and `node-permissions`; the
  others are kept and reported, as C does, without effect (`QUOTA_NAMES`,
  docs/protocol-4.22.md says why).  A domain without a value of its own is
  checked as oxenstored checks it (EQUOTA/E2BIG from the global limits);
  with one, as C xenstored checks (domain_quota_add_exceeds: ENOSPC,
  node-size E2BIG, path-max EINVAL; 0 = no limit); a quota below the
  current use only refuses further growth;
* WATCH `<path>|<token>|<depth>|` (watch.c do_watch, is_child) and the
  special watches `@releaseDomain/<domid>`, `@introduceDomain/<domid>`, and
  `<depth>` 1 on `@releaseDomain`/`@introduceDomain` reporting
  `@<special>/<domid>` (domain.c fire_special_watches).

Dump records (oxsd's; the original skips them as unknown lines): see
`dump_lines`.
"""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from . import define as Define
from .config import PROTOCOL_LEVELS, check_protocol_level
from . import perms as Perms
from .connections import lookup_watch_perm
from .directory_part import DirectoryPart, Generations, c_atoi
from .process import InvalidCmdArgs, decode_path, split
from .store import Path
from .utils import hexify, int_of_string, unhexify
from .xb.op import NEWER_OPS, Op

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection
    from .process import Process
    from .quota import Quota
    from .transaction import Transaction

log = logging.getLogger("oxsd.protocol_level")

LEVEL_4_17 = "4.17"
LEVEL_4_22 = "4.22"
LEVELS = PROTOCOL_LEVELS  # also parse_arg.PROTOCOL_LEVELS (no import: a leaf module)
check_level = check_protocol_level

# xs_wire.h XENSTORE_SERVER_FEATURE_*
FEATURE_RECONNECTION = 1
FEATURE_ERROR = 2
FEATURE_WATCHDEPTH = 4
FEATURE_DOMID_ANY = 8
FEATURES = FEATURE_RECONNECTION | FEATURE_ERROR | FEATURE_WATCHDEPTH | FEATURE_DOMID_ANY

# xs_wire.h XENSTORE_ERROR_*
XENSTORE_ERROR_RINGIDX = 2

# domain.c quota_adm, in its order, and the one soft quota C master has (`soft-memory`):
# GET_QUOTA without arguments lists them so.  Enforced: nodes, watches, transactions,
# node-size, path-max, node-permissions.  Kept and reported only (C's answers, no
# effect): outstanding, memory, soft-memory, transaction-nodes (docs/protocol-4.22.md).
QUOTA_NAMES = ("nodes", "watches", "outstanding", "memory", "soft-memory", "transactions",
               "transaction-nodes", "node-permissions", "path-max", "node-size")
# The quotas Quota.check asks about (a node's creation and its size).
NODE_QUOTAS = ("nodes", "node-size")
U32 = 0xFFFFFFFF
Q_VAL_DISABLED = U32  # domain.h: a value that cannot be set
NO_PATH_LIMIT = sys.maxsize  # path-max 0


def c_strings(data: bytes) -> List[bytes]:
    """C get_strings: the NUL-terminated strings of the payload."""
    if not data:
        return []
    parts = data.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return parts


def parse_domid(raw: bytes) -> int:
    """domain.c parse_domid: decimal 0..65535 and nothing else, else EINVAL."""
    if not raw.isdigit() or int(raw) > 65535:
        raise Define.InvalidArgument("domid")
    return int(raw)


def ncomponents(apath: str) -> int:
    return 0 if apath == "/" else apath.count("/")


class DomainQuotas:
    """Quota values set by XS_SET_QUOTA: global overrides and per domain (dom0 is never limited)."""

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings
        self.global_: Dict[str, int] = {}
        self.domains: Dict[int, Dict[str, int]] = {}

    def applies(self, domid: int) -> bool:
        """Whether a node quota (`NODE_QUOTAS`) was set for `domid` or globally."""
        own = self.domains.get(domid, {})
        return any(n in self.global_ or n in own for n in NODE_QUOTAS)

    def value(self, domid: Optional[int], name: str) -> Optional[int]:
        """The value set for `domid` (or globally); None: oxenstored's own global check."""
        if domid is not None:
            v = self.domains.get(domid, {}).get(name)
            if v is not None:
                return v
        return self.global_.get(name)

    def reported(self, domid: Optional[int], name: str) -> int:
        """GET_QUOTA's value: the one set, else what oxenstored's config enforces (0: nothing)."""
        v = self.value(domid, name)
        if v is not None:
            return v
        s = self.settings
        return {"nodes": s.quota_maxentity, "watches": s.quota_maxwatch,
                "transactions": s.quota_transaction, "node-size": s.quota_maxsize,
                "path-max": s.quota_path_max, "outstanding": s.quota_maxoutstanding,
                }.get(name, 0)

    def check_node(self, quota: "Quota", domid: int, size: int) -> None:
        """Quota.check for a domain with quota values of its own (Quota.check's hook)."""
        size_limit = self.value(domid, "node-size")
        if size_limit is None:
            if size > quota.maxsize:
                raise Define.DataTooBig()
        elif size_limit and size > size_limit:
            raise Define.DataTooBig()
        nodes = self.value(domid, "nodes")
        entry = quota.cur.get(domid)
        if nodes is None:
            if entry is not None and entry >= quota.maxent:
                raise Define.QuotaLimitReached()
        elif nodes and (entry or 0) + 1 > nodes:
            raise Define.NoSpace()

    def forget(self, domid: int) -> None:
        self.domains.pop(domid, None)


class ProtocolLevel:
    """The state and handlers of protocol level 4.22, installed into a Process."""

    def __init__(self, process: "Process") -> None:
        self.process = process
        self.cons = process.cons
        self.settings = process.settings
        self.quotas = DomainQuotas(self.settings)
        self.generations = Generations()
        # SET_FEATURE values of domains not introduced yet, and of introduced ones.
        self.features: Dict[int, int] = {}
        self.directory_part = DirectoryPart(self.generations)

    # -- features -------------------------------------------------------
    def features_of(self, con: "Connection") -> int:
        if con.dom is None:
            return FEATURES
        return self.features.get(con.dom.id, FEATURES)

    def on_new_domain(self, con: "Connection") -> None:
        """A new ring connection: advertise its features (domain.c introduce_domain);
        its path-max quota."""
        ring = con.xb._ring
        if ring is not None:
            ring.ring.set_server_features(self.features_of(con))
        self.apply_path_max(con)

    def on_bad_connection(self, con: "Connection") -> None:
        ring = con.xb._ring
        if ring is not None and self.features_of(con) & FEATURE_ERROR:
            try:
                ring.ring.set_error(XENSTORE_ERROR_RINGIDX)
            except ValueError:  # the page is gone already
                pass

    @staticmethod
    def complete_empty_packet(con: "Connection"):
        """A header of ops 22..26 with length 0 is a whole packet now, as for C xenstored.

        4.17 (xb.ml) completes it on the next input step only, i.e. on a socket
        when the next request comes: GET_FEATURE and GET_QUOTA without
        arguments, as libxenstore sends them, would wait for it.  The ops 4.17
        knows keep its behaviour (the corpus at this level shows it)."""
        partial = con.xb.partial_in
        if (partial.in_body() and partial.to_read() == 0
                and partial._pkt.ty in NEWER_OPS  # the header just read (xb/partial.py)
                and not con.pending_source_watchevents.q):
            try:
                return con.xb.input()
            except Exception:  # the next regular step sees the same error
                return None
        return None

    def forget_domain(self, domid: int) -> None:
        self.features.pop(domid, None)
        self.quotas.forget(domid)

    def _domain_exists(self, domid: int) -> bool:
        """find_or_alloc_existing_domain: known to us or to the hypervisor."""
        if domid in self.cons.domains:
            return True
        doms = self.process.doms
        if doms is None:
            return False
        try:
            doms.hv.domain_getinfo(domid)
            return True
        except Exception:
            return False

    def do_get_feature(self, con: "Connection", t: "Transaction", data: bytes) -> bytes:
        args = c_strings(data)
        if not args:
            return b"%d\0" % self.features_of(con)
        if not con.is_dom0():
            raise Define.PermissionDenied()
        if len(args) > 1:
            raise Define.InvalidArgument("GET_FEATURE")
        domid = parse_domid(args[0])
        if not self._domain_exists(domid):
            raise Define.NotFound(domid)
        c = self.cons.domains.get(domid)
        if c is not None:
            return b"%d\0" % self.features_of(c)
        return b"%d\0" % self.features.get(domid, FEATURES)

    def do_set_feature(self, con: "Connection", t: "Transaction", data: bytes) -> None:
        self._require_priv(con)
        args = c_strings(data)
        if len(args) != 2:
            raise Define.InvalidArgument("SET_FEATURE")
        domid = parse_domid(args[0])
        features = c_atoi(args[1]) & U32
        if not self._domain_exists(domid):
            raise Define.NotFound(domid)
        if domid in self.cons.domains:
            raise Define.Busy()
        if features & ~FEATURES:
            raise Define.InvalidArgument("features")
        self.features[domid] = features

    # -- quotas ---------------------------------------------------------
    @staticmethod
    def _require_priv(con: "Connection") -> None:
        if not con.is_dom0():
            raise Define.PermissionDenied()

    @staticmethod
    def _quota_name(raw: bytes) -> str:
        name = raw.decode("latin-1")
        if name not in QUOTA_NAMES:
            raise Define.InvalidArgument(name)
        return name

    def domain_limit(self, con: "Connection", name: str) -> Optional[int]:
        """The XS_SET_QUOTA value for `con`'s domain; None: oxenstored's global check."""
        if con.dom is None or con.is_dom0():
            return None
        return self.quotas.value(con.dom.id, name)

    def apply_path_max(self, con: "Connection") -> None:
        """`con.path_max`: its domain's `path-max` quota, else oxenstored's quota-path-max."""
        limit = self.domain_limit(con, "path-max")
        if limit is None:
            con.path_max = self.settings.quota_path_max
        else:
            con.path_max = limit or NO_PATH_LIMIT

    def _apply_path_max_everywhere(self) -> None:
        for con in self.cons.iter_domains():
            self.apply_path_max(con)

    def do_get_quota(self, con: "Connection", t: "Transaction", data: bytes) -> bytes:
        self._require_priv(con)
        args = c_strings(data)
        if len(args) > 2:
            raise Define.InvalidArgument("GET_QUOTA")
        if not args:
            return " ".join(QUOTA_NAMES).encode() + b"\0"
        if len(args) == 1:
            return b"%d\0" % self.quotas.reported(None, self._quota_name(args[0]))
        domid = parse_domid(args[0])
        if not self._domain_exists(domid):
            raise Define.NotFound(domid)
        return b"%d\0" % self.quotas.reported(domid, self._quota_name(args[1]))

    def do_set_quota(self, con: "Connection", t: "Transaction", data: bytes) -> None:
        self._require_priv(con)
        args = c_strings(data)
        if not 2 <= len(args) <= 3:
            raise Define.InvalidArgument("SET_QUOTA")
        if len(args) == 2:
            name, val = self._quota_name(args[0]), c_atoi(args[1]) & U32
            if val == Q_VAL_DISABLED:
                raise Define.InvalidArgument("value")
            self.quotas.global_[name] = val
            if name == "path-max":
                self._apply_path_max_everywhere()
            return
        domid = parse_domid(args[0])
        if not self._domain_exists(domid):
            raise Define.NotFound(domid)
        name, val = self._quota_name(args[1]), c_atoi(args[2]) & U32
        if val == Q_VAL_DISABLED:
            raise Define.InvalidArgument("value")
        self.quotas.domains.setdefault(domid, {})[name] = val
        if name == "path-max":
            self._apply_path_max_everywhere()

    # -- permissions ----------------------------------------------------
    def do_setperms(self, con: "Connection", t: "Transaction", data: bytes) -> None:
        """SET_PERMS with DOMID_ANY and the `node-permissions` quota (core.c do_set_perms).

        A DOMID_ANY entry stands for every domain when the writer has
        FEATURE_DOMID_ANY; without it the entry is ignored, and an ignored
        owner is ENOENT (domain.c domain_alloc_permrefs).  More entries than
        the writer's `node-permissions`: ENOSPC."""
        args = split(2, data)
        if len(args) != 2:
            raise InvalidCmdArgs()
        perms = Perms.Node.of_string(args[1])
        limit = self.domain_limit(con, "node-permissions")
        if limit and 1 + len(perms.acl) > limit:
            raise Define.NoSpace()
        if Perms.names_domid_any(perms):
            if self.features_of(con) & FEATURE_DOMID_ANY:
                perms = Perms.AnyDomainNode(*perms)
            elif perms.owner == Perms.DOMID_ANY:
                raise Define.NotFound(Perms.DOMID_ANY)
        path = Path.create(decode_path(args[0]), con.get_path(), con.path_max)
        t.setperms(con.perm, path, perms)

    # -- watches --------------------------------------------------------
    def do_watch(self, con: "Connection", t: "Transaction", data: bytes):
        """WATCH, with `<depth>` when the connection has WATCHDEPTH (watch.c do_watch)."""
        args = data.split(b"\0")
        limit = self.domain_limit(con, "watches")
        if len(args) == 4 and args[3] == b"" and self.features_of(con) & FEATURE_WATCHDEPTH:
            depth: Optional[int] = c_atoi(args[2])
            if depth < 0:  # type: ignore[operator]
                raise Define.InvalidArgument("depth")
        elif len(args) == 3 and args[2] == b"":
            if limit is None:
                return self.process.do_watch(con, t, data)  # 4.17's WATCH exactly
            depth = None
        else:
            raise Define.InvalidArgument("WATCH")
        return self._add_watch(con, args[0].decode("latin-1"), args[1], depth, limit)

    def _add_watch(self, con: "Connection", path: str, token: bytes,
                   depth: Optional[int], limit: Optional[int]):
        from .connections import key_of_str
        from .packet import Ack
        apath = con.get_watch_path(path)
        key_of_str(apath)  # EINVAL first, as check_watch_path
        if any(w.token == token for w in con.get_watches(apath)):
            raise Define.AlreadyExist()
        if limit and con.nb_watches >= limit:
            raise Define.NoSpace()
        watch = self.cons.add_watch(con, path, token, check_quota=limit is None)
        if depth is not None:
            watch.depth = depth
            watch.max_components = ncomponents(con.get_watch_path(path)) + depth
        return Ack(lambda: con.fire_single_watch_unchecked(watch))

    def fire_spec_watches(self, root, specpath: str, domids: List[int]) -> None:
        """domain.c fire_special_watches: `<spec>` for watches without depth, then
        `<spec>/<domid>` for watches on it and for those on `<spec>` with depth > 0."""
        for domid in domids:
            if specpath == Path.release_domain:
                self.forget_domain(domid)
        cons = self.cons
        source = cons.find_domain(0)
        perms = lookup_watch_perm(Path.of_string(specpath), root)
        settings = self.settings
        for con in cons.iter():
            for w in con.get_watches(specpath):
                if w.depth is None:
                    self._fire(source, con, w, specpath, perms, settings)
        for domid in domids:
            name = f"{specpath}/{domid}"
            for con in cons.iter():
                for w in con.get_watches(specpath):
                    if w.depth is not None and w.depth > 0:
                        self._fire(source, con, w, name, perms, settings)
                for w in con.get_watches(name):
                    self._fire(source, con, w, name, perms, settings)

    @staticmethod
    def _fire(source: "Connection", con: "Connection", watch, path: str, perms, settings) -> None:
        if Perms.can_fire_watch(con.perm, perms, settings):
            source.fire_single_watch_unchecked(watch.with_path(path))
        else:
            pstr = ", ".join(Perms.Node.to_string(p, sep=" ") for p in perms)
            con.access_log.watch_not_fired(con.domstr, pstr, path)

    # -- dump -----------------------------------------------------------
    def dump_lines(self) -> List[str]:
        """oxsd's records of the level-4.22 state, after the original's.

            xs-generation,<counter>                  DIRECTORY_PART's generation counter (once used)
            xs-feature,<domid>,<features>            SET_FEATURE values
            xs-quota,<domid or -1 (global)>,<name>,<value>
            xs-watch-depth,<con ident>,<hex path>,<hex token>,<depth>
            xs-domid-any,<hex path>                  a node whose DOMID_ANY entries count
        """
        lines = []
        if self.generations.counter:
            lines.append(f"xs-generation,{self.generations.counter}\n")
        lines.extend(f"xs-feature,{d},{f}\n" for d, f in sorted(self.features.items()))
        lines.extend(f"xs-quota,-1,{n},{v}\n" for n, v in self.quotas.global_.items())
        for d, qs in sorted(self.quotas.domains.items()):
            lines.extend(f"xs-quota,{d},{n},{v}\n" for n, v in qs.items())
        for con in self.cons.iter():
            ident = con.dom.id if con.dom is not None else -con.get_fd()
            for ws in con.watches.values():
                for w in ws:
                    if w.depth is not None:
                        lines.append(f"xs-watch-depth,{ident},{hexify(w.path)},"
                                     f"{hexify(w.token)},{w.depth}\n")

        def domid_any(path: Path, node) -> None:
            if type(node.perms) is Perms.AnyDomainNode:
                fullpath = Path.of_path_and_name(path, node.name).to_string()
                lines.append(f"xs-domid-any,{hexify(fullpath)}\n")

        self.process.store.dump_fct(domid_any)
        return lines

    def restore_line(self, fields: List[str], get_con: Callable[[int], "Connection"]) -> bool:
        """One of `dump_lines`'s records read back; False if it is none of them."""
        kind, n = fields[0], len(fields)
        if kind == "xs-generation" and n == 2:
            self.generations.counter = max(self.generations.counter, int_of_string(fields[1]))
        elif kind == "xs-feature" and n == 3:
            domid = parse_domid(fields[1].encode())
            features = int_of_string(fields[2])
            if features & ~FEATURES:
                raise ValueError("features")
            self.features[domid] = features
            con = self.cons.domains.get(domid)
            if con is not None:  # the restored ring keeps what the old process advertised
                self.on_new_domain(con)
        elif kind == "xs-quota" and n == 4:
            name = self._quota_name(fields[2].encode())
            value = int_of_string(fields[3]) & U32
            if fields[1] == "-1":
                self.quotas.global_[name] = value
            else:
                self.quotas.domains.setdefault(parse_domid(fields[1].encode()), {})[name] = value
            if name == "path-max":
                self._apply_path_max_everywhere()
        elif kind == "xs-domid-any" and n == 2:
            self._restore_domid_any(Path.of_string(unhexify(fields[1])))
        elif kind == "xs-watch-depth" and n == 5:
            con = get_con(int_of_string(fields[1]))
            path, token = unhexify(fields[2]).decode("latin-1"), unhexify(fields[3])
            depth = int_of_string(fields[4])
            for w in con.get_watches(con.get_watch_path(path)):
                if w.token == token and w.path == path and depth >= 0:
                    w.depth = depth
                    w.max_components = ncomponents(con.get_watch_path(path)) + depth
        else:
            return False
        return True

    def _restore_domid_any(self, path: Path) -> None:
        store = self.process.store
        node = store.get_node(path)
        if node is None:
            raise Define.DoesntExist()
        perms = Perms.honour_domid_any(node.perms)
        store.set_root(store.path_setperms(Perms.Connection.full_rights, path, perms))


def install(process: "Process") -> ProtocolLevel:
    """Turn protocol level 4.22 on in `process` (its dispatch table and hooks)."""
    from .process import ACK, DATA, NONE
    level = ProtocolLevel(process)
    process.protocol = level
    process._table.update({
        Op.DIRECTORY_PART: (DATA, level.directory_part.do_directory_part),
        Op.GET_FEATURE: (DATA, level.do_get_feature),
        Op.SET_FEATURE: (ACK, level.do_set_feature),
        Op.GET_QUOTA: (DATA, level.do_get_quota),
        Op.SET_QUOTA: (ACK, level.do_set_quota),
        Op.WATCH: (NONE, level.do_watch),
    })
    # Replayable in a transaction: a read like DIRECTORY, SET_PERMS as 4.17's.
    process._simple[Op.DIRECTORY_PART] = (DATA, level.directory_part.do_directory_part)
    process._table[Op.SET_PERMS] = process._simple[Op.SET_PERMS] = (ACK, level.do_setperms)
    process.cons.on_new_domain = level.on_new_domain
    store = process.store
    store.set_quota(store.get_quota().with_limits(level.quotas))
    for con in process.cons.iter_domains():
        level.on_new_domain(con)
    return level
