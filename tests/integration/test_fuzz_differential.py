"""The differential fuzzer (oxsd/diff/fuzz.py) in a bounded run: seeded random
streams from three socket clients and two ring guests, every op, transactions,
watches, permissions, quota edges and malformed requests, replayed on oxsd and
on the original; byte-identical replies, events, logs and final store.

CI runs SEEDS x REQUESTS requests; a person runs the long mode:
``python3 -m oxsd.diff.fuzz --seeds 1-200 --requests 2000``.
"""
from __future__ import annotations

import pytest

from oxsd.diff.cli import diff_scenario
from oxsd.diff.fuzz import generate
from oxsd.diff.scenario import parse

SEEDS = range(1, 9)
REQUESTS = 400


def test_generator_is_deterministic_and_covers_every_kind_of_request():
    text = generate(7, REQUESTS)
    assert text == generate(7, REQUESTS) and text != generate(8, REQUESTS)
    scn = parse(text, "<fuzz>")
    assert sum(1 for s in scn.steps if s.action in ("request", "send")) >= REQUESTS
    for needle in ("WRITE", "TRANSACTION_START", "TRANSACTION_END", "WATCH", "UNWATCH",
                   "SET_PERMS", "RESET_WATCHES", "g: ", "h: ", "z: "):
        assert needle in text, needle


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzzed_stream_is_identical_on_oxsd_and_the_original(seed, ocaml_ref, guest_backend):
    cmp = diff_scenario(parse(generate(seed, REQUESTS), f"<fuzz seed {seed}>"),
                        ("ocaml", "oxsd"), guests=guest_backend, keep_different=True)
    assert cmp.identical, cmp.report()
    for rec in (cmp.a, cmp.b):
        assert rec.alive_at_end, f"{rec.kind} died"
        assert not rec.errors, rec.errors
        answered = [e for entries in rec.transcripts.values() for e in entries
                    if e.kind == "packet"]
        assert len(answered) >= REQUESTS * 0.9  # the streams were served, not abandoned
