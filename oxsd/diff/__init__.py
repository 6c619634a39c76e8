"""Differential harness: oxsd against the OCaml oxenstored, byte for byte.

Modules: ``wire`` (raw client, framing), ``daemons`` (launchers for both
daemons with the same config), ``scenario`` (the scenario file format),
``runner`` (run + record), ``compare`` (comparison and report), ``cli``
(the ``oxsd-diff`` console script, ``python -m oxsd.diff``).
"""
from .cli import diff_scenario, main, record

__all__ = ["main", "diff_scenario", "record"]
