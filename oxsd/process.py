"""Request dispatch and every operation's handler (port of process.ml).

`process_packet` is the one place where the shared work happens: the
transaction lookup, the request quota, turning exceptions into error
names, history records and the reply.  Each `do_*` handler is small and
only parses its arguments and calls the store through a transaction.

Error mapping follows `input_handle_error`: Python exceptions stand in for
OCaml's (`KeyError` for `Not_found`, `ValueError` for `Invalid_argument`
and `Failure "int_of_string"`); anything else becomes EIO and is logged.

What is not dispatch is mixed in: `transaction_end` (commit, conflict replay
and blame), `carried_transactions` (live update's, oxsd only) and `control`
(process.ml: do_debug's sub-commands).
"""
from __future__ import annotations

import logging
import traceback
from time import perf_counter_ns
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from . import define as Define
from . import perms as Perms
from . import quota as Quota
from . import utils as Utils
from .carried_transactions import CarriedTransactions
from .connection import Connection, UnknownTransaction
from .control import Control
from .history import History
from .live_update import LiveUpdate
from .logging_ import exn_to_string
from .packet import ACK, DATA, DATA_OR_ACK, NONE, Ack, Error, Reply, Request, Response
from .stats import SAMPLE, SAMPLE_MASK, DaemonStats
from .store import Path, PathCache
from .transaction import Transaction
from .transaction_end import TransactionAgain, TransactionEnd
from .xb.op import (NEWER_OPS, OP_ERROR, OP_MKDIR, OP_RM, OP_SET_PERMS, OP_UNWATCH, OP_WATCH,
                    OP_WATCH_EVENT, OP_WRITE, Op)
from .xb.packet import HEADER
from .xb.xb import BadConnection, Reconnect

if TYPE_CHECKING:
    from .config import Settings
    from .connections import Connections
    from .domains import Domains
    from .logging_ import AccessLog
    from .store import Store
    from .transaction import TransactionRegistry

log = logging.getLogger("oxsd.process")


class TransactionNested(Exception):
    """EBUSY: TRANSACTION_START inside a transaction."""


class DomainNotMatch(Exception):
    """EINVAL: re-introduce with another mfn or port."""


class InvalidCmdArgs(Exception):
    """EINVAL: the payload does not have the op's argument shape."""


_ERRORS: Tuple[Tuple[type, str], ...] = (
    (Define.InvalidPath, "EINVAL"),
    (Define.AlreadyExist, "EEXIST"),
    (Define.DoesntExist, "ENOENT"),
    (Define.LookupDoesntExist, "ENOENT"),
    (Define.PermissionDenied, "EACCES"),
    (KeyError, "ENOENT"),
    (InvalidCmdArgs, "EINVAL"),
    (ValueError, "EINVAL"),
    (IndexError, "EINVAL"),
    (TransactionAgain, "EAGAIN"),
    (TransactionNested, "EBUSY"),
    (DomainNotMatch, "EINVAL"),
    (Quota.LimitReached, "EQUOTA"),
    (Quota.DataTooBig, "E2BIG"),
    (Quota.TransactionOpened, "EQUOTA"),
    (Define.NoSpace, "ENOSPC"),
    (Define.Busy, "EBUSY"),
    (Define.UnknownOperation, "ENOSYS"),
)
_HANDLED = tuple(cls for cls, _ in _ERRORS)


def error_name(exn: BaseException) -> Optional[str]:
    for cls, name in _ERRORS:
        if isinstance(exn, cls):
            return name
    return None


def split(limit: Optional[int], data: bytes) -> List[bytes]:
    """Cut at NULs until `limit` pieces exist (default 8); the last holds the rest."""
    return data.split(b"\0", (limit or 8) - 1)


def decode_path(raw: bytes) -> str:
    # latin-1 maps bytes 1:1, so any byte survives until path validation rejects it.
    return raw.decode("latin-1")


# Ops that change the store outside transactions and so are kept in history.
RETAINED_IN_HISTORY = frozenset((Op.WRITE, Op.MKDIR, Op.RM, Op.SET_PERMS))


class Process(TransactionEnd, CarriedTransactions, Control):
    """The request processor: owns the handlers and the state they share."""

    def __init__(self, *, store: "Store", cons: "Connections", doms: Optional["Domains"],
                 settings: "Settings", access_log: "AccessLog", txreg: "TransactionRegistry",
                 history: History, live_update: "LiveUpdate") -> None:
        self.store = store
        self.cons = cons
        self.doms = doms
        self.settings = settings
        self.paths = PathCache()  # the requests' parsed paths
        self.access_log = access_log
        self.txreg = txreg
        self.history = history
        self.live_update = live_update
        self.disk_write: Optional[Callable[["Store"], None]] = None
        # -T FILE: an object with packet_in(con, pkt) / packet_out(con, pkt), or None.
        self.trace = None
        self.stats = DaemonStats()
        # The id-0 transaction every request outside a transaction runs in (_process_direct).
        self._direct = txreg.make(0, store, internal=True)
        # Protocol level 4.22 (a protocol_level.ProtocolLevel, set by its install(); not
        # imported here: it imports this module); None at level 4.17.
        self.protocol = None
        self._simple: Dict[Op, Tuple[int, Callable]] = {
            Op.DIRECTORY: (DATA, self.do_directory),
            Op.READ: (DATA, self.do_read),
            Op.GET_PERMS: (DATA, self.do_getperms),
            Op.GET_DOMAIN_PATH: (DATA, self.do_getdomainpath),
            Op.WRITE: (ACK, self.do_write),
            Op.MKDIR: (ACK, self.do_mkdir),
            Op.RM: (ACK, self.do_rm),
            Op.SET_PERMS: (ACK, self.do_setperms),
            Op.WATCH_EVENT: (ACK, self.do_error), Op.ERROR: (ACK, self.do_error),  # catch-all: replayable
        }
        self._table: Dict[Op, Tuple[int, Callable]] = dict(self._simple)
        self._table.update({
            Op.DEBUG: (DATA_OR_ACK, self.do_debug),
            Op.WATCH: (NONE, self.do_watch),
            Op.UNWATCH: (ACK, self.do_unwatch),
            Op.TRANSACTION_START: (DATA, self.do_transaction_start),
            Op.TRANSACTION_END: (ACK, self.do_transaction_end),
            Op.INTRODUCE: (ACK, self.do_introduce),
            Op.RELEASE: (ACK, self.do_release),
            Op.IS_INTRODUCED: (DATA, self.do_isintroduced),
            Op.RESUME: (ACK, self.do_resume),
            Op.SET_TARGET: (ACK, self.do_set_target),
            Op.RESET_WATCHES: (ACK, self.do_reset_watches),
            Op.INVALID: (ACK, self.do_error),
            Op.WATCH_EVENT: (ACK, self.do_error),
            Op.ERROR: (ACK, self.do_error),
        })
        # Unknown to 4.17's op.ml: handled as INVALID unless protocol level 4.22 says otherwise.
        self._table.update({op: (ACK, self.do_error) for op in NEWER_OPS})

    # -- helpers --------------------------------------------------------
    def split_one_path(self, data: bytes, con: Connection) -> Path:
        args = data.split(b"\0", 1)  # split(2, data); Path.create decodes (decode_path)
        if len(args) == 2 and args[1] == b"":
            return self.paths.create(args[0], con.base_path, con.path_max)
        raise InvalidCmdArgs()

    def process_watch(self, source: Connection, t: Transaction) -> None:
        """Fire the watches for every change the transaction recorded, oldest first."""
        oldroot = t.oldroot
        newroot = t.store.root  # t.get_root()
        cons = self.cons
        for op, path in t.paths:  # oldest first
            if op is OP_WRITE or op is OP_MKDIR:
                cons.fire_watches(source, (None, newroot), path, False)
            elif op is OP_RM:
                cons.fire_watches(source, (None, oldroot), path, True)
            elif op is OP_SET_PERMS:
                cons.fire_watches(source, (oldroot, newroot), path, False)
            else:
                raise RuntimeError("huh ?")
        if source.pending_source_watchevents.q:  # send_watchevents flushes it: nothing to do if empty
            cons.send_watchevents(source)

    @staticmethod
    def create_implicit_path(t: Transaction, perm, path: Path) -> None:
        """mkdir every missing ancestor of `path` (no watch fires for them)."""
        if t.store.path_exists(path[:-1]):  # the parent (no Path made for the usual case)
            return
        hierarchy = path.get_parent().get_hierarchy()[1:]
        missing: List[Path] = []
        for i, p in enumerate(hierarchy):
            if not t.path_exists(p):
                missing = hierarchy[i:]
                break
        for p in missing:
            t.mkdir(perm, p, with_watch=False)

    # -- handlers -------------------------------------------------------
    def do_debug(self, con: Connection, t: Transaction, data: bytes) -> Optional[bytes]:
        if not con.is_dom0() and not self.settings.allow_debug:
            return None
        try:
            return self.debug_command(con, t, split(None, data))
        except Exception:
            return None

    def do_directory(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        path = self.split_one_path(data, con)
        entries = t.ls(con.perm, path)
        if entries:
            return b"\0".join(e.encode("latin-1") for e in entries) + b"\0"
        return b""

    def do_read(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        return t.read(con.perm, self.split_one_path(data, con))

    def do_getperms(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        perms = t.getperms(con.perm, self.split_one_path(data, con))
        return Perms.Node.to_string(perms).encode("latin-1") + b"\0"

    def do_getdomainpath(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        args = split(None, data)
        if len(args) == 2 and args[1] == b"":
            domid = Utils.c_int_of_string(args[0])
            return b"/local/domain/%s\0" % Utils.format_u(domid).encode()
        raise InvalidCmdArgs()

    def do_write(self, con: Connection, t: Transaction, data: bytes) -> None:
        args = data.split(b"\0", 1)  # split(2, data); Path.create decodes (decode_path)
        if len(args) != 2:
            raise InvalidCmdArgs()
        path = self.paths.create(args[0], con.base_path, con.path_max)
        if not t.write_below_parent(con.perm, path, args[1]):  # the usual case, one tree walk
            self.create_implicit_path(t, con.perm, path)
            t.write(con.perm, path, args[1])

    def do_mkdir(self, con: Connection, t: Transaction, data: bytes) -> None:
        path = self.split_one_path(data, con)
        self.create_implicit_path(t, con.perm, path)
        try:
            t.mkdir(con.perm, path)
        except Define.AlreadyExist:
            pass

    def do_rm(self, con: Connection, t: Transaction, data: bytes) -> None:
        path = self.split_one_path(data, con)
        try:
            t.rm(con.perm, path)
        except Define.DoesntExist:
            pass

    def do_setperms(self, con: Connection, t: Transaction, data: bytes) -> None:
        args = split(2, data)
        if len(args) != 2:
            raise InvalidCmdArgs()
        # OCaml evaluates the tuple right to left: perms are parsed first.
        perms = Perms.Node.of_string(args[1])
        path = self.paths.create(args[0], con.get_path(), con.path_max)
        t.setperms(con.perm, path, perms)

    def do_error(self, con: Connection, t: Transaction, data: bytes) -> None:
        raise Define.UnknownOperation()

    def do_isintroduced(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        if not con.is_dom0():
            raise Define.PermissionDenied()
        domid = Utils.int_of_string(split(None, data)[0].decode("latin-1"))
        known = self.doms is not None and self.doms.exist(domid)
        return b"T\0" if domid == Define.domid_self or known else b"F\0"

    def do_reset_watches(self, con: Connection, t: Transaction, data: bytes) -> None:
        self.cons.del_watches(con)
        con.del_transactions()

    def do_set_target(self, con: Connection, t: Transaction, data: bytes) -> None:
        if not con.is_dom0():
            raise Define.PermissionDenied()
        args = split(None, data)
        if len(args) == 3 and args[2] == b"":
            self.cons.set_target(Utils.c_int_of_string(args[0]), Utils.c_int_of_string(args[1]))
            return
        raise InvalidCmdArgs()

    def do_watch(self, con: Connection, t: Transaction, data: bytes) -> Response:
        args = split(None, data)
        if len(args) != 3 or args[2] != b"":
            raise InvalidCmdArgs()
        node, token = decode_path(args[0]), args[1]
        watch = self.cons.add_watch(con, node, token)
        # The initial event fires even if the path is missing or unreadable.
        return Ack(lambda: con.fire_single_watch_unchecked(watch))

    def do_unwatch(self, con: Connection, t: Transaction, data: bytes) -> None:
        args = split(None, data)
        if len(args) != 3 or args[2] != b"":
            raise InvalidCmdArgs()
        self.cons.del_watch(con, decode_path(args[0]), args[1])

    def do_transaction_start(self, con: Connection, t: Transaction, data: bytes) -> bytes:
        if t.get_id() != 0:
            raise TransactionNested()
        tid = self.start_transaction(con, t.get_store())
        return b"%d\0" % tid

    def do_transaction_end(self, con: Connection, t: Transaction, data: bytes) -> None:
        first = split(None, data)[0]
        if first == b"T":
            commit = True
        elif first == b"F":
            commit = False
        else:
            raise ValueError(first)
        # A carried transaction whose restore replay differed fails even if read-only.
        commit = commit and (not t.is_read_only() or t.restore_failed)
        success = self.end_transaction(con, t.get_id(), commit)
        self.history.trim(t)
        if not success:
            raise TransactionAgain()
        if commit:
            self.process_watch(con, t)
            if t.ty is not None:
                self.record_commit(con, t.ty.id, t.ty.oldstore, t.ty.cstore)

    def do_introduce(self, con: Connection, t: Transaction, data: bytes) -> None:
        if not con.is_dom0():
            raise Define.PermissionDenied()
        args = split(None, data)
        if len(args) < 3:
            raise InvalidCmdArgs()
        # Fields are parsed right to left, as OCaml evaluates the tuple.
        remote_port = Utils.int_of_string(args[2].decode("latin-1"))
        mfn = Utils.nativeint_of_string(args[1].decode("latin-1"))
        domid = Utils.int_of_string(args[0].decode("latin-1"))
        doms = self.doms
        if doms is None:
            raise InvalidCmdArgs()
        if doms.exist(domid):
            dom = doms.find(domid)
            if dom.get_mfn() == mfn and self.cons.domains.get(domid) is not con:
                dom.rebind_evtchn(remote_port)
        else:
            try:
                dom = doms.create(domid, mfn, remote_port=remote_port)
                self.cons.add_domain(dom)
                self.fire_spec_watches(t.get_root(), Path.introduce_domain, [domid])
            except Exception as exn:
                raise InvalidCmdArgs() from exn
        if dom.get_remote_port() != remote_port or dom.get_mfn() != mfn:
            raise DomainNotMatch()

    def do_release(self, con: Connection, t: Transaction, data: bytes) -> None:
        if not con.is_dom0():
            raise Define.PermissionDenied()
        args = split(None, data)
        if len(args) != 2 or args[1] != b"":
            raise InvalidCmdArgs()
        domid = Utils.int_of_string(args[0].decode("latin-1"))
        doms = self.doms
        fire = doms is not None and doms.exist(domid)
        if doms is not None:
            doms.dele(domid)
        self.cons.del_domain(domid)
        t.get_store().reset_permissions(domid)
        if not fire:
            raise InvalidCmdArgs()
        self.fire_spec_watches(t.get_root(), Path.release_domain, [domid])

    def fire_spec_watches(self, root, specpath: str, domids: List[int]) -> None:
        """Fire `specpath` for `domids`: plain at level 4.17, with `<spec>/<domid>` at 4.22."""
        if self.protocol is None:
            self.cons.fire_spec_watches(root, specpath)
        else:
            self.protocol.fire_spec_watches(root, specpath, domids)

    def do_resume(self, con: Connection, t: Transaction, data: bytes) -> None:
        if not con.is_dom0():
            raise Define.PermissionDenied()
        domid = Utils.int_of_string(split(None, data)[0].decode("latin-1"))
        if self.doms is not None and self.doms.exist(domid):
            self.doms.resume(domid)
        else:
            raise InvalidCmdArgs()

    # -- dispatch -------------------------------------------------------
    def input_handle_error(self, kind: int, fct: Callable, con: Connection, t: Transaction,
                           req: Request) -> Response:
        try:
            t.check_quota_exn(con.perm)
            if kind == DATA:
                return Reply(fct(con, t, req.data))
            if kind == ACK:
                fct(con, t, req.data)
                if t.get_id() == 0:
                    return Ack(lambda: self.process_watch(con, t))
                return Ack(None)
            if kind == DATA_OR_ACK:
                ret = fct(con, t, req.data)
                return Ack(None) if ret is None else Reply(ret)
            return fct(con, t, req.data)
        except _HANDLED as exn:
            return Error(error_name(exn))

    def process_packet(self, con: Connection, req: Request) -> None:
        """Handle one request completely; never raises (errors become EIO)."""
        ty = req.ty
        tid = req.tid
        if ty is OP_WATCH or ty is OP_UNWATCH:
            if tid != 0:
                log.debug("Ignoring transaction ID %d for watch/unwatch", tid)
            tid = 0
        rid = req.rid
        try:
            kind, fct = self._table[ty]
            if tid == 0:
                self._process_direct(con, req, ty, rid, kind, fct)
                return
            t = con.get_transaction(tid)
            response = self.input_handle_error(kind, fct, con, t, req)
            try:
                t.check_quota_exn(con.perm)
                t.add_operation(req, response)
            except Quota.LimitReached:
                response = Error("EQUOTA")
            self.send_response(ty, con, t.get_id(), rid, response)
        except Exception as exn:
            # A guest's unknown tid gets the original's one error line, not a Python traceback
            # (OCaml's backtrace there is two frames of its own Hashtbl.find).
            bt = "" if isinstance(exn, UnknownTransaction) else traceback.format_exc()
            log.error("process packet: %s. %s", exn_to_string(exn), bt)
            con.send_error(tid, rid, "EIO")

    def _process_direct(self, con: Connection, req: Request, ty: Op, rid: int, kind: int,
                        fct: Callable) -> None:
        """process_packet outside a transaction, on the live store.

        The same as the original's path (a `Transaction.make Transaction.none`,
        input_handle_error, the history record of process.ml's
        `execute_command`, check_quota_exn, the response and its `after`),
        in the same order, without making a transaction, a response or a
        closure per request: one id-0 transaction is reset and reused (a
        request never starts while another runs), the reply is sent
        directly and the watches of the changes fire after the ack.
        `check_quota_exn` of a fresh id-0 transaction can only fail when
        quota-maxrequests is 0 (it has no operations), and then for a
        connection that is not dom0.
        """
        store = self.store
        t = self._direct
        t.reset_direct(store, self.txreg.counter)
        limited = self.settings.quota_maxrequests == 0
        record = None
        before = store
        if ty in RETAINED_IN_HISTORY:
            dom = con.dom
            record = dom is not None and not dom.is_free_to_conflict()
            if record:
                before = store.copy()
        out = None
        err = None
        try:
            if limited and not con.perm.is_dom0():
                t.quota_reached = True
                raise Quota.LimitReached()
            out = fct(con, t, req.data)
        except _HANDLED as exn:
            err = error_name(exn)
        if record is not None:
            if record:
                self.record_commit(con, 0, before, self.store.copy())
            else:  # history keeps nothing for these connections; only the count moves
                self.txreg.counter += 1
        if limited and (t.quota_reached or not con.perm.is_dom0()):
            err = "EQUOTA"
        if err is not None:
            con.send_error(0, rid, err)
        elif kind == ACK:
            con.send_ack(0, rid, ty)
            self.process_watch(con, t)
        elif kind == DATA:
            con.send_reply(0, rid, ty, out)
        elif kind == DATA_OR_ACK:
            if out is None:
                con.send_ack(0, rid, ty)
            else:
                con.send_reply(0, rid, ty, out)
        else:
            self.send_response(ty, con, 0, rid, out)

    @staticmethod
    def send_response(ty: Op, con: Connection, tid: int, rid: int, response: Response) -> None:
        if isinstance(response, Ack):
            con.send_ack(tid, rid, ty)
            if response.after is not None:
                response.after()
        elif isinstance(response, Reply):
            con.send_reply(tid, rid, ty, response.data)
        else:
            con.send_error(tid, rid, response.name)

    # -- I/O steps (called by the main loop) ------------------------------
    def do_input(self, con: Connection) -> None:
        """One input step (Connection.do_input when it can_input), then the request it completed."""
        try:
            # Xb.input checks the output queue's room itself; the pipe of
            # watch events not yet delivered is the rest of can_input.
            packet = None if con.pending_source_watchevents.q else con.xb.input()
        except Reconnect:
            self._reconnect(con)
            return
        except (BadConnection, ValueError) as exn:
            log.error("caught exception %s", exn)
            log.error("got a bad client %-8s", con.domstr)
            con.mark_as_bad()
            if self.protocol is not None:
                self.protocol.on_bad_connection(con)
            return
        if packet is None:
            if self.protocol is None:
                return
            packet = self.protocol.complete_empty_packet(con)
            if packet is None:
                return
        if self.trace is not None:
            self.trace.packet_in(con, packet)
        # The request count (the original's stat_nb_ops, by op for oxsd-top:
        # stats.py), raised after the request as connection.ml's incr_ops is;
        # each op's SAMPLE-th request of a connection is timed and its path
        # counted.
        ty = packet.ty
        by_op = con.counters.by_op
        done = by_op[ty]
        if done & SAMPLE_MASK != SAMPLE_MASK:
            self.process_packet(con, packet)
        else:
            self._process_sampled(con, packet, self.stats)
        by_op[ty] = done + 1
        access_log = self.access_log
        if access_log.logs_op[ty]:  # xb_op's own test, without the call for reads
            access_log.xb_op(packet.tid, con.domstr, ty, packet.data)

    def _process_sampled(self, con: Connection, packet: Request, ds: DaemonStats) -> None:
        started = perf_counter_ns()
        self.process_packet(con, packet)
        ns = perf_counter_ns() - started
        con.counters.serve_ns += ns * SAMPLE
        if ns > ds.slow_floor:
            ds.record_slow(ns, packet.ty, packet.data, con.domstr)
        ds.sample_path(packet.data)

    def do_output(self, con: Connection, nowait: bool = False) -> None:
        """Flush the source pipe, access-log the head packet, write one packet."""
        if con.pending_source_watchevents.q:
            con.source_flush_watchevents()
        xb = con.xb  # the Connection accessors, one layer down (hot path)
        queued = xb.pkt_out.q
        if queued:  # has_new_output: log the head (even behind a half-written packet)
            pkt = queued[0]
            ty = pkt.ty
            if ty == OP_ERROR or ty == OP_WATCH_EVENT:  # the only answers xb_answer logs
                self.access_log.xb_answer(pkt.tid, con.domstr, ty, pkt.data)
            if xb._out_off >= len(xb._out):  # not has_old_output: the head is written now
                if ty == OP_WATCH_EVENT:
                    con.counters.events_sent += 1
                if self.trace is not None:
                    self.trace.packet_out(con, pkt)
        elif not xb.has_old_output():
            return  # no output at all
        try:
            xb.output(nowait)
        except Reconnect:
            self._reconnect(con)

    def do_output_held(self, con: Connection) -> None:
        """`do_output(con, True)` while whole packets are queued, on a held socket.

        The socket's writes are being gathered for one send (Xb.hold_output),
        so each packet is taken whole: the same access-log lines, counters
        and trace as packet-by-packet do_output calls, with the serialisation
        inline (a socket batch's replies, the hot path).  Nothing is done
        while a packet is partly written: its rest waits for POLLOUT.
        """
        xb = con.xb
        if xb._out_off < len(xb._out):
            return
        q = xb._q
        counts = xb._counts
        pending = xb.backend.pending
        pipe = con.pending_source_watchevents.q
        st = con.counters
        access_log = self.access_log
        trace = self.trace
        pack = HEADER.pack
        while q:
            if pipe:
                con.source_flush_watchevents()
            pkt = q.popleft()  # Xb.output: BoundedQueue.pop
            ty = pkt.ty
            data = pkt.data
            if ty == OP_WATCH_EVENT:
                counts[1] -= 1
                access_log.xb_answer(pkt.tid, con.domstr, ty, data)
                st.events_sent += 1
            else:
                counts[0] -= 1
                if ty == OP_ERROR:
                    access_log.xb_answer(pkt.tid, con.domstr, ty, data)
            if trace is not None:
                trace.packet_out(con, pkt)
            pending.append(pack(ty, pkt.rid, pkt.tid, len(data)) + data)

    def _reconnect(self, con: Connection) -> None:
        """History.reconnect, with XSA-512's fix: the watches leave the global trie too."""
        log.info("%s requests a reconnect", con.domstr)
        self.history.trim()
        con.do_reconnect()
        # XSA-512 (CVE-2026-79604): before 4.17.7+13 the trie kept the old
        # watches, so they fired after the reconnect and a guest reconnecting
        # in a loop grew the trie without bound.  The fixed build behaves as
        # Connections.del_watches: the watch table is reset (back to its
        # initial bucket count, visible in CONTROL watches order) as well.
        self.cons.del_watches(con)
        log.info("%s reconnection complete", con.domstr)

