"""Broken oxsd daemons for tests that show a difference is caught."""
from __future__ import annotations

import os
import textwrap

__all__ = ["patch_oxsd_daemons"]


def patch_oxsd_daemons(monkeypatch, tmp_path, patch: str) -> None:
    """Every oxsd daemon started from now on runs `patch` at start-up.

    The patch goes into a sitecustomize.py on PYTHONPATH, never into product
    code.  It runs only in the oxsd daemon (start_oxsd sets XENSTORED_RUNDIR),
    not in the reference launcher's helper python.
    """
    site = tmp_path / "site"
    site.mkdir()
    body = textwrap.indent(textwrap.dedent(patch), "    ")
    (site / "sitecustomize.py").write_text(
        "import os\nif os.environ.get('XENSTORED_RUNDIR'):\n" + body + "\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])))
