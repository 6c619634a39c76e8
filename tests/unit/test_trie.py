"""oxsd.trie: the persistent trie behind the global watch index (connections.ml: add_watch, connections.ml: fire_watches)."""
import random

import pytest

from oxsd.trie import Trie


def collect_iter(t):
    out = []
    t.iter(lambda k, v: out.append((k, v)))
    return out


def test_empty_trie():
    t = Trie.create()
    assert t.is_empty()
    assert not t.mem([""])
    with pytest.raises(KeyError):
        t.find([""])
    assert collect_iter(t) == []


def test_set_find_mem():
    t = Trie.create().set(["", "a", "b"], "ab")
    assert t.find(["", "a", "b"]) == "ab"
    assert t.mem(["", "a", "b"])
    assert not t.mem(["", "a"])  # intermediate node without value
    assert not t.mem([])
    with pytest.raises(KeyError):
        t.find(["", "a"])
    with pytest.raises(KeyError):
        t.find(["", "a", "b", "c"])


def test_set_empty_key_is_not_found():
    with pytest.raises(KeyError):
        Trie.create().set([], 1)


def test_set_replaces_value_keeps_children():
    t = Trie.create().set(["", "a", "b"], 1).set(["", "a"], 2).set(["", "a"], 3)
    assert t.find(["", "a"]) == 3 and t.find(["", "a", "b"]) == 1


def test_updates_are_persistent():
    t1 = Trie.create().set(["", "a"], 1)
    t2 = t1.set(["", "b"], 2)
    t3 = t2.unset(["", "a"])
    assert not t1.mem(["", "b"])
    assert t2.mem(["", "a"]) and not t3.mem(["", "a"])
    assert t3.find(["", "b"]) == 2


def test_unset_missing_is_not_found():
    t = Trie.create().set(["", "a"], 1)
    with pytest.raises(KeyError):
        t.unset(["", "b"])
    with pytest.raises(KeyError):
        t.unset(["", "a", "c"])


def test_unset_prunes_empty_branches_but_keeps_valued_or_busy_nodes():
    t = Trie.create().set(["", "a", "b", "c"], 1)
    assert t.unset(["", "a", "b", "c"]).is_empty()
    t = t.set(["", "a"], 2)
    u = t.unset(["", "a", "b", "c"])
    assert collect_iter(u) == [("", None), ("a", 2)]
    # unsetting an inner node keeps its children
    v = t.unset(["", "a"])
    assert collect_iter(v) == [("", None), ("a", None), ("b", None), ("c", 1)]
    assert v.unset([]) is not None and collect_iter(v.unset([])) == collect_iter(v)


def test_iter_is_preorder_ascending_keys():
    t = Trie.create()
    for key in (["", "b"], ["", "a", "z"], ["", "a"], ["", "B"], ["@x"], ["", "a", "c"]):
        t = t.set(key, "/".join(key))
    assert collect_iter(t) == [
        ("", None), ("B", "/B"), ("a", "/a"), ("c", "/a/c"), ("z", "/a/z"), ("b", "/b"),
        ("@x", "@x")]


def test_fold_visits_like_iter():
    t = Trie.create().set(["", "a"], 1).set(["", "b"], 2).set(["", "a", "c"], 3)
    assert t.fold(lambda k, v, acc: acc + [(k, v)], []) == collect_iter(t)


def test_iter_path_walks_longest_existing_prefix_top_down():
    t = Trie.create().set([""], "root").set(["", "a"], "a").set(["", "a", "b", "c"], "abc")
    seen = []
    t.iter_path(lambda k, v: seen.append((k, v)), ["", "a", "b", "c", "d"])
    assert seen == [("", "root"), ("a", "a"), ("b", None), ("c", "abc")]
    seen.clear()
    t.iter_path(lambda k, v: seen.append(k), ["", "x", "a"])
    assert seen == [""]
    seen.clear()
    t.iter_path(lambda k, v: seen.append(k), ["@releaseDomain"])
    assert seen == []


def test_sub_gives_descendants_only():
    t = Trie.create().set(["", "a"], 1).set(["", "a", "b"], 2).set(["", "a", "b", "c"], 3)
    assert collect_iter(t.sub(["", "a"])) == [("b", 2), ("c", 3)]
    assert t.sub(["", "zz"]).is_empty()
    assert t.sub([]).is_empty()


def test_map_transforms_and_prunes_dropped_values():
    t = (Trie.create().set(["", "a"], [1, 2]).set(["", "a", "b"], [3])
         .set(["", "c", "d"], [4]).set(["@x"], [5]))
    m = t.map(lambda ws: [w for w in ws if w % 2 == 1] or None)
    assert collect_iter(m) == [("", None), ("a", [1]), ("b", [3]), ("@x", [5])]
    assert collect_iter(t)[1] == ("a", [1, 2])  # original untouched


def test_very_deep_keys_work_without_recursion_errors():
    key = [""] + ["a"] * 3000
    t = Trie.create().set(key, 1)
    assert t.find(key) == 1
    assert t.map(lambda v: v + 1).find(key) == 2
    assert len(collect_iter(t)) == 3001
    seen = []
    t.iter_path(lambda k, v: seen.append(v), key)
    assert seen[-1] == 1 and len(seen) == 3001
    assert t.unset(key).is_empty()


def test_matches_a_dict_model_under_random_operations():
    rng = random.Random(1234)
    names = ["", "a", "b", "c"]
    t = Trie.create()
    model = {}
    for _ in range(2000):
        key = tuple(rng.choice(names) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.6:
            t = t.set(key, key)
            model[key] = key
        elif key in model:
            t = t.unset(key)
            del model[key]
        for k in list(model)[:5]:
            assert t.find(k) == model[k]
        assert t.mem(key) == (key in model)
    assert sorted(v for _, v in collect_iter(t) if v is not None) == sorted(model.values())
