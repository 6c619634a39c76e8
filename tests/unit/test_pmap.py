"""oxsd.pmap: the persistent hash map behind big child maps and the quota counts."""
from __future__ import annotations

import random

import pytest

from oxsd.pmap import LEAF_MAX, PMap


class Colliding:
    """Keys that all hash alike: leaves must hold them once the hash bits run out."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Colliding) and other.n == self.n

    def __repr__(self) -> str:
        return f"C{self.n}"


@pytest.mark.parametrize("seed", range(10))
def test_pmap_behaves_like_a_dict_and_never_changes_an_old_version(seed):
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(300)] + list(range(-50, 300)) + [Colliding(i) for i in range(40)]
    m, model = PMap.EMPTY, {}
    versions = []
    for _ in range(3000):
        k = rnd.choice(keys)
        if rnd.random() < 0.65:
            v = rnd.randrange(5)
            m = m.set(k, v)
            model[k] = v
        elif k in model:
            m = m.delete(k)
            del model[k]
        else:
            with pytest.raises(KeyError):
                m.delete(k)
        if rnd.random() < 0.05:
            versions.append((m, dict(model)))
        assert len(m) == len(model)
    assert dict(m.items()) == model
    assert sorted(map(repr, m)) == sorted(map(repr, model))
    assert all(m[k] == v and m.get(k) == v and k in m for k, v in model.items())
    for old, snapshot in versions:
        assert dict(old.items()) == snapshot


def test_changed_against_reports_new_and_changed_pairs_only():
    base = PMap.of_dict({i: i for i in range(1000)})
    mod = base.set(5, 50).set(2000, 1).delete(7)
    assert sorted(mod.changed_against(base)) == [(5, 50), (2000, 1)]
    assert base.changed_against(base) == []


def test_an_update_copies_a_bounded_part_whatever_the_size():
    """set/delete copy one leaf (<= LEAF_MAX entries) and one 32-slot list per level."""
    for n in (100, 10_000):
        m = PMap.of_dict({i: i for i in range(n)})
        m2 = m.set(5, -1)
        shared = sum(1 for a, b in zip(_leaves(m), _leaves(m2)) if a is b)
        assert len(_leaves(m)) - shared <= 1
        assert max(len(leaf) for leaf in _leaves(m2)) <= LEAF_MAX


def _leaves(m: PMap) -> list:
    from oxsd.pmap import _iter_nodes
    return list(_iter_nodes(m._root))
