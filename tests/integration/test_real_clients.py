"""The real Debian clients against both daemons ("a feature is done when
these work against oxsd").

* xenstore-utils (xenstore-read/-write/-ls/-list/-exists/-chmod/-rm/-watch),
  through XENSTORED_PATH, with Debian's libxenstore;
* Xen's test-xenstore, all 12 tests and 20 s of random tests;
* python3-pyxs: read/write/list/perms/transactions/Monitor.

Every test runs on a fresh daemon of each kind; the expected outputs were
taken from Debian's oxenstored and are asserted literally.
"""
from __future__ import annotations

import errno
import queue
import select
import subprocess
import sys
import threading

import pytest


# ---------------------------------------------------------------- helpers

def xs(clients, daemon, tool, *args, timeout=10.0):
    return clients.run(daemon.socket_path, tool, *args, timeout=timeout)


def ok(clients, daemon, tool, *args) -> str:
    res = xs(clients, daemon, tool, *args)
    assert (res.returncode, res.stderr) == (0, ""), f"xenstore-{tool} {args}: {res}"
    return res.stdout


def populate(clients, daemon) -> None:
    ok(clients, daemon, "write", "/vm/1/name", "guest one", "/vm/1/mem", "512",
       "/vm/1/esc", "tab\\there\\x01")


# --------------------------------------------------------- xenstore-utils

def test_xenstore_write_then_read_returns_each_value(clients, daemon):
    populate(clients, daemon)
    assert ok(clients, daemon, "read", "/vm/1/name", "/vm/1/mem") == "guest one\n512\n"


def test_xenstore_read_prefix_and_escapes(clients, daemon):
    populate(clients, daemon)
    assert ok(clients, daemon, "read", "-p", "/vm/1/name") == "/vm/1/name: guest one\n"
    # unsanitised on write (\t, \x01), sanitised back on read; -R prints raw bytes
    assert ok(clients, daemon, "read", "/vm/1/esc") == "tab\\there\\001\n"
    assert ok(clients, daemon, "read", "-R", "/vm/1/esc") == "tab\there\x01"


def test_xenstore_read_missing_node_fails(clients, daemon):
    res = xs(clients, daemon, "read", "/nope")
    assert res.returncode == 1
    assert res.stderr == "xenstore-read: couldn't read path /nope\n"


def test_xenstore_ls_prints_tree_with_values(clients, daemon):
    populate(clients, daemon)
    assert ok(clients, daemon, "ls", "/vm") == (
        '1 = ""\n'
        ' esc = "tab\\there\\001"\n'
        ' mem = "512"\n'
        ' name = "guest one"\n')


def test_xenstore_ls_p_pads_and_shows_permissions(clients, daemon):
    populate(clients, daemon)
    ok(clients, daemon, "chmod", "/vm/1/name", "n1", "r2")
    assert ok(clients, daemon, "ls", "-p", "/vm") == (
        '1 = "" . . . . . . . . . . . . . . . . . . . . . . . . . . .  (n0)\n'
        ' esc = "tab\\there\\001" . . . . . . . . . . . . . . . . . . .  (n0)\n'
        ' mem = "512" . . . . . . . . . . . . . . . . . . . . . . . .  (n0)\n'
        ' name = "guest one"  . . . . . . . . . . . . . . . . . . . .  (n1,r2)\n')


def test_xenstore_ls_f_prints_full_paths(clients, daemon):
    populate(clients, daemon)
    assert ok(clients, daemon, "ls", "-f", "-p", "/vm") == (
        '/vm/1 = ""   (n0)\n'
        '/vm/1/esc = "tab\\there\\001"   (n0)\n'
        '/vm/1/mem = "512"   (n0)\n'
        '/vm/1/name = "guest one"   (n0)\n')


def test_xenstore_ls_root_lists_special_nodes_first(clients, daemon):
    out = ok(clients, daemon, "ls", "/")
    names = [line.split(" = ")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == ["@introduceDomain", "@releaseDomain", "local", "tool"]


def test_xenstore_list_sorted_children(clients, daemon):
    populate(clients, daemon)
    assert ok(clients, daemon, "list", "/vm/1") == "esc\nmem\nname\n"
    assert ok(clients, daemon, "list", "-p", "/vm/1") == "/vm/1/esc\n/vm/1/mem\n/vm/1/name\n"
    res = xs(clients, daemon, "list", "/nope")
    assert (res.returncode, res.stderr) == (1, "xenstore-list: could not list path /nope\n")


def test_xenstore_exists_exit_status(clients, daemon):
    populate(clients, daemon)
    assert xs(clients, daemon, "exists", "/vm/1/name").returncode == 0
    assert xs(clients, daemon, "exists", "/vm/2").returncode == 1


def test_xenstore_chmod_recursive_sets_every_node(clients, daemon):
    populate(clients, daemon)
    ok(clients, daemon, "chmod", "-r", "/vm", "b5", "r0")
    perms = {line.split(" = ")[0].strip(): line.rsplit("(", 1)[1]
             for line in ok(clients, daemon, "ls", "-f", "-p", "/vm").splitlines()}
    assert perms == {p: "b5,r0)" for p in ("/vm/1", "/vm/1/esc", "/vm/1/mem", "/vm/1/name")}
    res = xs(clients, daemon, "chmod", "/vm", "x1")
    assert res.returncode == 1
    assert res.stderr == "xenstore-chmod: Invalid permission specification: 'x'\n"


def test_xenstore_rm_removes_subtree_and_tidy_removes_empty_parents(clients, daemon):
    populate(clients, daemon)
    ok(clients, daemon, "rm", "/vm/1/mem")
    assert ok(clients, daemon, "list", "/vm/1") == "esc\nname\n"
    ok(clients, daemon, "write", "/t/a/b/c", "")
    ok(clients, daemon, "rm", "-t", "/t/a/b/c")
    assert ok(clients, daemon, "list", "/") == "@introduceDomain\n@releaseDomain\nlocal\ntool\nvm\n"
    res = xs(clients, daemon, "rm", "/nope/x")
    assert (res.returncode, res.stderr) == (1, "xenstore-rm: could not remove path /nope/x\n")


def test_xenstore_write_over_quota_maxsize_fails(clients, daemon):
    res = xs(clients, daemon, "write", "/big", "x" * 2049)
    assert (res.returncode, res.stderr) == (1, "xenstore-write: could not write path /big\n")
    ok(clients, daemon, "write", "/big", "x" * 2048)
    assert ok(clients, daemon, "read", "/big") == "x" * 2048 + "\n"


def _readline(proc, timeout):
    """One stdout line of proc, or None after timeout."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


def test_xenstore_watch_prints_initial_and_change_events(clients, daemon):
    ok(clients, daemon, "write", "/w", "")
    proc = subprocess.Popen([str(clients.bindir / "xenstore-watch"), "-n", "3", "/w"],
                            env=clients.env(daemon.socket_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        # the initial event proves the watch is registered
        assert _readline(proc, 10) == "/w\n"
        ok(clients, daemon, "write", "/w/x", "1")
        assert _readline(proc, 10) == "/w/x\n"
        ok(clients, daemon, "rm", "/w")
        assert _readline(proc, 10) == "/w\n"
        assert proc.wait(10) == 0  # -n 3: exits after three events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------ test-xenstore

TEST_XENSTORE_TESTS = ["read 1", "read 2000", "write 1", "write 2000", "dir", "rm node",
                       "rm dir", "ta empty", "ta empty x", "ta rmw", "ta rmw x", "ta err"]


def test_test_xenstore_all_twelve_tests_pass(clients, daemon):
    res = subprocess.run([str(clients.test_xenstore)], env=clients.env(daemon.socket_path),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    names = [line.split(":")[0].rstrip() for line in res.stdout.splitlines() if ":" in line]
    assert names == TEST_XENSTORE_TESTS
    assert "failed" not in res.stdout
    # it cleans up after itself
    assert ok(clients, daemon, "list", "/") == "@introduceDomain\n@releaseDomain\nlocal\ntool\n"


def test_test_xenstore_random_for_20_seconds(clients, daemon):
    """Random tests for 20 s; a failing test stops the run with status 3."""
    res = subprocess.run([str(clients.test_xenstore), "-r", "20"],
                         env=clients.env(daemon.socket_path), capture_output=True, text=True,
                         timeout=90)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "failed" not in res.stdout
    assert daemon.alive()


# ------------------------------------------------------------------- pyxs

@pytest.fixture
def pyxs(clients):
    sys.path.insert(0, str(clients.pythonpath))
    try:
        import pyxs as module
    finally:
        sys.path.remove(str(clients.pythonpath))
    return module


def bounded(fn, timeout=15.0):
    """Run fn in a thread (pyxs blocks forever on a missing reply)."""
    result: queue.Queue = queue.Queue()

    def target():
        try:
            result.put((True, fn()))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            result.put((False, e))

    threading.Thread(target=target, daemon=True).start()
    try:
        good, value = result.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"pyxs call did not return within {timeout}s")
    if not good:
        raise value
    return value


def test_pyxs_read_write_list_delete(pyxs, daemon):
    def body():
        with pyxs.Client(unix_socket_path=daemon.socket_path) as c:
            c.write(b"/p/a", b"1")
            c.write(b"/p/b", b"two")
            c.mkdir(b"/p/c")
            assert c.read(b"/p/b") == b"two"
            assert c.list(b"/p") == [b"a", b"b", b"c"]
            assert c.exists(b"/p/c") and not c.exists(b"/p/d")
            assert c.read(b"/p/d", b"dflt") == b"dflt"
            c.delete(b"/p/a")
            assert c.list(b"/p") == [b"b", b"c"]
            with pytest.raises(pyxs.PyXSError) as err:
                c.read(b"/p/a")
            assert err.value.args[0] == errno.ENOENT
            assert c.get_domain_path(7) == b"/local/domain/7"
            return sorted(p for p, _, _ in c.walk(b"/p"))
    assert bounded(body) == [b"/p", b"/p/b", b"/p/c"]


def test_pyxs_permissions_roundtrip(pyxs, daemon):
    def body():
        with pyxs.Client(unix_socket_path=daemon.socket_path) as c:
            c.write(b"/perm", b"")
            assert c.get_perms(b"/perm") == [b"n0"]
            c.set_perms(b"/perm", [b"b3", b"r0", b"w7"])
            return c.get_perms(b"/perm")
    assert bounded(body) == [b"b3", b"r0", b"w7"]


def test_pyxs_transaction_commit_and_rollback(pyxs, daemon):
    def body():
        with pyxs.Client(unix_socket_path=daemon.socket_path) as c:
            tx = c.transaction()
            assert tx == 1
            c.write(b"/tx/a", b"in-tx")
            assert c.read(b"/tx/a") == b"in-tx"
            assert c.commit() is True
            c.transaction()
            c.write(b"/tx/b", b"dropped")
            c.rollback()
            return c.read(b"/tx/a"), c.exists(b"/tx/b")
    assert bounded(body) == (b"in-tx", False)


def test_pyxs_transaction_conflict_returns_false(pyxs, daemon):
    def body():
        with pyxs.Client(unix_socket_path=daemon.socket_path) as c, \
                pyxs.Client(unix_socket_path=daemon.socket_path) as other:
            c.write(b"/cf", b"0")
            c.transaction()
            assert c.read(b"/cf") == b"0"
            c.write(b"/cf", b"mine")
            other.write(b"/cf", b"theirs")  # changes what the transaction read
            committed = c.commit()
            return committed, c.read(b"/cf")
    assert bounded(body) == (False, b"theirs")


def test_pyxs_monitor_receives_events(pyxs, daemon):
    def body():
        with pyxs.Client(unix_socket_path=daemon.socket_path) as c:
            m = c.monitor()
            m.watch(b"/mon", b"tok")
            events = [m.events.get(timeout=10)]          # initial event
            c.write(b"/mon/x", b"1")
            events.append(m.events.get(timeout=10))
            m.unwatch(b"/mon", b"tok")
            c.write(b"/mon/y", b"2")
            with pytest.raises(queue.Empty):
                m.events.get(timeout=0.3)
            return [tuple(e) for e in events]
    assert bounded(body) == [(b"/mon", b"tok"), (b"/mon/x", b"tok")]
