"""Scenario format details and the access-log importer (oxsd.diff)."""
from __future__ import annotations

import pytest

from oxsd.diff.accesslog import import_access_log, unescape_ocaml
from oxsd.diff.scenario import ScenarioError, parse

LOG = """\
[20261125T06:40:32.515Z]  A1           newconn   
[20261125T06:40:32.516Z]  A2           newconn   
[20261125T06:40:32.516Z]  A1           endconn   
[20261125T06:40:32.516Z]  A2           write     /a/b hello world
[20261125T06:40:32.516Z]  A2           mkdir     /m 
[20261125T06:40:32.516Z]  A2           watch     /a t 
[20261125T06:40:32.517Z]  A2           w event   /a t 
[20261125T06:40:32.517Z]  A2.3         write     /x \\255\\n
[20261125T06:40:32.517Z]  A2.3         commit    
[20261125T06:40:32.517Z]  A2           error     EINVAL 
[20261125T06:40:32.518Z]  D5           write     data/x 1
[20261125T06:40:32.518Z]  r(3):A2      write     /x 1
[20261125T06:40:32.519Z]  A2           endconn   
"""


def test_import_access_log_rebuilds_requests_and_connections():
    text = import_access_log(LOG, "x.log")
    lines = [line.split("  #")[0] for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "conn A1", "conn A2", "A1: close",
        'A2: WRITE tx=0 "/a/b\\0hello world"', 'A2: MKDIR tx=0 "/m\\0"',
        'A2: WATCH tx=0 "/a\\0t\\0"',
        'A2: TRANSACTION_START tx=0 "\\0"', 'A2: WRITE tx=3 "/x\\0\\xff\\x0a"',
        'A2: TRANSACTION_END tx=3 "T\\0"', "A2: close"]
    assert "#   A2 <- WATCH_EVENT /a t " in text
    assert "# [20261125T06:40:32.518Z]  D5           write     data/x 1" in text
    scn = parse(text)  # a valid scenario
    assert sum(1 for s in scn.steps if s.action == "request") == 6


def test_unescape_ocaml_string_escaped():
    assert unescape_ocaml(r"a\\b\"c\n\t\255") == b'a\\b"c\n\t\xff'


def test_scenario_close_then_eof_forms():
    scn = parse("conn a\na: eof\na: close\n")
    assert [s.action for s in scn.steps] == ["conn", "eof", "close"]
    with pytest.raises(ScenarioError):
        parse("conn a\na: close now\n")
