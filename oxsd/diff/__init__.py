"""Differential harness: oxsd against the OCaml oxenstored, byte for byte.

Modules: ``wire`` (raw client, framing), ``daemons`` (launchers for both
daemons with the same config), ``scenario`` (the scenario file format),
``runner`` (run + record), ``compare`` (comparison and report), ``guests``
(ring guests on oxsd.sim for the CLI), ``proxy`` (recording proxy,
``oxsd-diff record``), ``accesslog`` (``oxsd-diff import-access-log``),
``cli`` (the ``oxsd-diff`` console script, ``python -m oxsd.diff``).
Daemon-side capture (``oxsd -T FILE``) is ``oxsd.trace``.
"""
from .cli import diff_scenario, main, record

__all__ = ["main", "diff_scenario", "record"]
