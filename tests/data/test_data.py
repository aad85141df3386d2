"""Synthetic generator, columnar store, real-format loaders, batching."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from suan.data.loader import build_batch, make_loader
from suan.data.real import BUILDERS
from suan.data.registry import open_dataset
from suan.data.store import Store
from suan.data.synthetic import SyntheticConfig, generate
from suan.defaults import DATA_PRESETS as PRESETS

from support.fixture_files import write_amazon, write_movielens, write_movielens_csv, write_taobao

TINY = dataclasses.replace(PRESETS["tiny"], num_users=120, chunk_users=50)


def _files(path):
    out = {}
    for root, _, names in os.walk(path):
        for n in names:
            if n.endswith(".bin"):
                with open(os.path.join(root, n), "rb") as f:
                    out[os.path.relpath(os.path.join(root, n), path)] = f.read()
    return out


def test_synthetic_is_deterministic_by_seed(tmp_path):
    a = generate(str(tmp_path / "a"), TINY)
    b = generate(str(tmp_path / "b"), TINY)
    c = generate(str(tmp_path / "c"), dataclasses.replace(TINY, seed=7))
    assert _files(a.path) == _files(b.path)
    assert _files(a.path) != _files(c.path)
    assert os.path.exists(tmp_path / "a" / "schema.json")


def test_synthetic_store_is_consistent(tmp_path):
    store = generate(str(tmp_path / "s"), TINY)
    d = store.describe()
    assert sum(d["samples"].values()) > 0 and d["events"] > 0
    for name in ("train", "valid", "test"):
        sp = store.split(name)
        c = sp.columns
        assert (c["hist_start"] <= c["hist_end"]).all()
        assert (c["hist_end"] <= store.meta["num_events"]).all()
        ts = np.asarray(store.events["ts"])
        # every history behavior happened strictly before the request: no future leak
        last = np.asarray(c["hist_end"]) - 1
        has = np.asarray(c["hist_end"]) > np.asarray(c["hist_start"])
        assert (ts[last[has]] < np.asarray(c["request_ts"])[has]).all()
        for f in store.schema.behavior_fields:
            ev = np.asarray(store.events[f.name])
            assert ev.min() >= 1 and ev.max() < f.vocab_size
        assert set(np.unique(c["label"])) <= {0.0, 1.0}
    # per-user time split: a user's test requests come after its train requests
    tr, te = store.split("train").columns, store.split("test").columns
    for u in np.unique(te["user"])[:20]:
        assert np.asarray(tr["request_ts"])[np.asarray(tr["user"]) == u].max() <= \
            np.asarray(te["request_ts"])[np.asarray(te["user"]) == u].min()


def test_chunked_generation_bounds_memory(tmp_path):
    """Chunks are independent: more users only append (the first chunk's data is unchanged)."""
    small = generate(str(tmp_path / "a"), dataclasses.replace(TINY, num_users=50))
    big = generate(str(tmp_path / "b"), dataclasses.replace(TINY, num_users=100))
    n = small.meta["num_events"]
    np.testing.assert_array_equal(np.asarray(small.events["item"]), np.asarray(big.events["item"])[:n])


def test_store_detects_damage(tmp_path):
    store = generate(str(tmp_path / "s"), TINY)
    with open(os.path.join(store.path, "events", "item.bin"), "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match="damaged"):
        Store(store.path)
    with pytest.raises(FileNotFoundError, match="schema.json"):
        Store(str(tmp_path / "nothing"))


def test_a_store_rewritten_in_place_is_refused(tmp_path):
    """A dataset records its fingerprint when built; contents changed under it (same sizes, so
    opening it cannot tell) are refused by ``fingerprint()``, which every run calls."""
    store = generate(str(tmp_path / "s"), TINY)
    assert store.meta["fingerprint"] == store.fingerprint()
    labels = np.memmap(os.path.join(store.path, "train", "label.bin"), dtype="<f4", mode="r+")
    labels[0] = 1.0 - labels[0]
    labels.flush()
    del labels
    with pytest.raises(ValueError, match="differ from what was built"):
        Store(store.path).fingerprint()


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_a_cache_is_built_aside_and_renamed_into_place(tmp_path):
    """open_or_build never exposes a half-built dataset: a folder without schema.json is replaced,
    a dataset another process finished first is used (ours discarded), a failed build leaves the
    folder as it was, and nothing is left beside it."""
    from suan.data.store import open_or_build

    out = tmp_path / "cache" / "ds"
    os.makedirs(out)
    (out / "partial.bin").write_bytes(b"half")  # a build that died before writing schema.json
    built = open_or_build(str(out), lambda tmp: generate(tmp, TINY))
    assert built.path == str(out) and not (out / "partial.bin").exists()
    assert built.fingerprint() == generate(str(tmp_path / "ref"), TINY).fingerprint()
    assert open_or_build(str(out), lambda tmp: pytest.fail("rebuilt a complete dataset")).path == str(out)

    other = tmp_path / "cache" / "raced"
    other_cfg = dataclasses.replace(TINY, seed=7)

    def raced(tmp):  # another process finishes the same folder while this one builds
        generate(str(other), other_cfg)
        return generate(tmp, TINY)

    winner = open_or_build(str(other), raced)
    assert winner.info["config"]["seed"] == 7
    with pytest.raises(RuntimeError, match="boom"):
        open_or_build(str(tmp_path / "cache" / "failed"), lambda tmp: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not (tmp_path / "cache" / "failed").exists()
    assert _leftovers(tmp_path / "cache") == []


def test_a_cached_synthetic_dataset_of_another_config_is_replaced_not_rewritten(tmp_path):
    """Regenerating a cache for another configuration swaps folders: a process that already
    mapped the old dataset keeps reading its bytes unchanged."""
    from suan.data.synthetic import load_or_generate

    out = str(tmp_path / "cache" / "syn")
    old = load_or_generate(out, TINY)
    before = np.array(old.split("train").columns["label"])
    new = load_or_generate(out, dataclasses.replace(TINY, seed=7))
    assert new.info["config"]["seed"] == 7 and new.path == out
    np.testing.assert_array_equal(np.asarray(old.split("train").columns["label"]), before)
    assert load_or_generate(out, dataclasses.replace(TINY, seed=7)).fingerprint() == new.fingerprint()
    assert _leftovers(tmp_path / "cache") == []


def test_batches_are_jagged_and_match_the_store(tmp_path):
    store = generate(str(tmp_path / "s"), TINY)
    sp = store.split("train")
    idx = np.array([0, 5, 3, 17])
    b = build_batch(store, sp, idx, max_len=7)
    lens = b.behavior_offsets.diff()
    assert (lens <= 7).all() and b.behavior_offsets[-1] == b.behaviors.shape[0]
    for k, i in enumerate(idx):
        s, e = int(sp.columns["hist_start"][i]), int(sp.columns["hist_end"][i])
        s = max(s, e - 7)
        seg = b.behaviors[b.behavior_offsets[k]:b.behavior_offsets[k + 1]]
        assert torch.equal(seg[:, 0], torch.as_tensor(np.array(store.events["item"][s:e]), dtype=torch.long))
    assert b.targets.shape == (4, len(store.schema.target_fields))
    assert b.labels.shape == (4,)


def test_loader_order_is_reproducible_and_resumable(tmp_path):
    store = generate(str(tmp_path / "s"), TINY)
    full = [b.user_ids for b in make_loader(store, "train", 32, 10, seed=3, epoch=1)]
    again = [b.user_ids for b in make_loader(store, "train", 32, 10, seed=3, epoch=1, num_workers=2)]
    tail = [b.user_ids for b in make_loader(store, "train", 32, 10, seed=3, epoch=1, start_batch=2)]
    assert all(torch.equal(a, b) for a, b in zip(full, again))
    assert all(torch.equal(a, b) for a, b in zip(full[2:], tail))
    halves = [make_loader(store, "train", 32, 10, seed=3, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    for b0, b1, whole in zip(*halves, full):
        assert torch.equal(torch.cat([b0.user_ids, b1.user_ids]), whole)


# ---- real formats ---------------------------------------------------------------------------
def _check_no_future_leak(store):
    ts = np.asarray(store.events["ts"])
    for name in ("train", "valid", "test"):
        c = store.split(name).columns
        end = np.asarray(c["hist_end"])
        start = np.asarray(c["hist_start"])
        has = end > start
        # the history ends before the sample's own event (strictly earlier position, earlier or equal time)
        assert (ts[end[has] - 1] <= np.asarray(c["request_ts"])[has]).all()
        users = np.asarray(c["user"])
        for u in np.unique(users)[:10]:
            sel = users == u
            assert (np.diff(np.asarray(c["request_ts"])[sel]) >= 0).all()


@pytest.mark.parametrize("kind", ["taobao", "movielens", "movielens-csv", "amazon"])
def test_real_format_loaders(tmp_path, kind, capsys):
    if kind == "taobao":
        src = tmp_path / "UserBehavior.csv"
        write_taobao(src)
        store = BUILDERS["taobao"](str(src), str(tmp_path / "out"))
        assert store.info["bad_rows"] == 3
    elif kind == "movielens":
        write_movielens(tmp_path)
        store = BUILDERS["movielens"](str(tmp_path / "ratings.dat"), str(tmp_path / "out"))
        assert store.info["bad_rows"] == 1
        assert [f.name for f in store.schema.feature_fields] == ["hour", "weekday", "gender", "age", "occupation"]
    elif kind == "movielens-csv":
        write_movielens_csv(tmp_path)
        store = BUILDERS["movielens"](str(tmp_path / "ratings.csv"), str(tmp_path / "out"))
    else:
        src = tmp_path / "reviews.jsonl"
        write_amazon(src)
        store = BUILDERS["amazon"](str(src), str(tmp_path / "out"))
        assert store.info["bad_rows"] == 2
    out = capsys.readouterr().out
    assert "rows" in out
    if kind in ("taobao", "amazon", "movielens"):
        assert ":" in out and "bad rows" in out  # file:line: reason reported
    d = store.describe()
    assert d["samples"]["train"] > 0 and d["samples"]["test"] > 0
    _check_no_future_leak(store)
    if kind in ("taobao", "amazon"):  # positives with popularity-sampled negatives: CTR 1/2
        assert abs(d["ctr"]["train"] - 0.5) < 1e-6
    b = build_batch(store, store.split("train"), np.arange(8), 5)
    assert b.behaviors.shape[1] == store.schema.num_behavior_fields


def test_bad_row_report_names_file_and_line(tmp_path, capsys):
    src = tmp_path / "UserBehavior.csv"
    write_taobao(src)
    BUILDERS["taobao"](str(src), str(tmp_path / "out"))
    out = capsys.readouterr().out
    n_lines = sum(1 for _ in open(src))
    assert f"{src}:{n_lines - 2}: expected 5 fields" in out
    assert f"{src}:{n_lines - 1}: unknown behavior 'click'" in out


def test_file_without_usable_rows_is_a_clear_error(tmp_path):
    src = tmp_path / "UserBehavior.csv"
    src.write_text("garbage\n1,2\n")
    with pytest.raises(ValueError, match="no usable rows"):
        BUILDERS["taobao"](str(src), str(tmp_path / "out"))
    empty = tmp_path / "reviews.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no usable rows"):
        BUILDERS["amazon"](str(empty), str(tmp_path / "out2"))


def test_registry_specs(tmp_path):
    src = tmp_path / "UserBehavior.csv"
    write_taobao(src)
    store = open_dataset(f"taobao:{src}", data_dir=str(tmp_path / "cache"))
    again = open_dataset(f"taobao:{src}", data_dir=str(tmp_path / "cache"))
    assert store.path == again.path
    assert open_dataset(store.path).path == store.path
    with pytest.raises(ValueError, match="cannot resolve"):
        open_dataset("nonsense:thing", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError):
        open_dataset("taobao:/does/not/exist.csv", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="preset"):
        open_dataset("synthetic:gigantic", data_dir=str(tmp_path))


def test_numeric_overflow_and_non_finite_fields_are_bad_rows_with_file_and_line(tmp_path, capsys):
    src = tmp_path / "UserBehavior.csv"
    write_taobao(src, bad=False)
    extra = ["1,2,3,pv,99999999999999999999999999", "1,2,3,pv,-5", "1,2,3,pv,nan", "1,2,\xff,pv,1511544070"]
    with open(src, "a", encoding="utf-8") as f:
        f.write("\n".join(extra) + "\n")
    BUILDERS["taobao"](str(src), str(tmp_path / "t"))
    out = capsys.readouterr().out
    n = sum(1 for _ in open(src, encoding="utf-8"))
    assert f"{src}:{n - 3}: timestamp 99999999999999999999999999 is outside" in out
    assert f"{src}:{n - 2}: timestamp -5 is outside" in out
    assert f"{src}:{n - 1}: timestamp 'nan' is not an integer" in out
    assert f"{src}:{n}: non-integer user, item or category" in out

    amazon = tmp_path / "reviews.jsonl"
    write_amazon(amazon)
    rows = [{"user_id": "U1", "parent_asin": "B1", "rating": "inf", "timestamp": 1588615855070},
            {"user_id": "U1", "parent_asin": "B1", "rating": 4.0, "timestamp": 1e400},
            {"user_id": "U1", "parent_asin": "B1", "rating": float("nan"), "timestamp": 1588615855070},
            {"user_id": "U1", "parent_asin": "B1", "rating": 4.0, "timestamp": 10 ** 30}]
    with open(amazon, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")  # json writes inf / nan / 1e400 as Infinity / NaN
    BUILDERS["amazon"](str(amazon), str(tmp_path / "a"))
    out = capsys.readouterr().out
    n = sum(1 for _ in open(amazon))
    assert f"{amazon}:{n - 3}: rating inf outside" in out
    assert f"{amazon}:{n - 2}: timestamp inf is not finite" in out
    assert f"{amazon}:{n - 1}: rating nan outside" in out
    assert f"{amazon}:{n}: timestamp {10 ** 30} is outside" in out


def test_amazon_2023_millisecond_timestamps_as_strings(tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = []
    for u in range(6):
        for k in range(6):
            rows.append({"user_id": f"U{u}", "parent_asin": f"B{k}", "rating": 5.0,
                         "timestamp": str((1_600_000_000 + 86400 * (u + k)) * 1000)})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = BUILDERS["amazon"](str(path), str(tmp_path / "out"))
    ts = np.asarray(store.events["ts"])
    assert ts.min() == 1_600_000_000 and ts.max() == 1_600_000_000 + 86400 * 10  # seconds, not milliseconds


def _tied_interactions():
    """One user: ratings at seconds 10, 20, 20, 20, 30, 30, 40 (file order shuffled)."""
    from suan.data.real import Interactions

    inter = Interactions()
    rows = [(20, 2), (10, 1), (30, 5), (20, 3), (40, 7), (20, 4), (30, 6)]
    for t, item in rows:
        inter.append(1, t, {"item": item, "action": 1}, label=float(item % 2))
    return inter


@pytest.mark.parametrize("rule", ["strict", "file-order"])
def test_history_rule_on_tied_timestamps(tmp_path, rule):
    from suan.config import FieldSpec, Schema
    from suan.data.real import build_store

    schema = Schema(behavior_fields=(FieldSpec("item", 10), FieldSpec("action", 3)), target_fields=("item",),
                    feature_fields=(FieldSpec("hour", 25),), num_dense=1)
    store = build_store(str(tmp_path / rule), _tied_interactions(), schema, source={"path": "fixture"},
                        label_from_outcome=True, valid_frac=0.0, test_frac=0.0, min_history=0, history_rule=rule)
    assert store.info["history_rule"] == rule
    ev_ts = np.asarray(store.events["ts"])
    lengths = []
    for split in ("train", "valid", "test"):  # every sample's history against its own request time
        cols = {k: np.asarray(v) for k, v in store.split(split).columns.items()}
        for start, end, req in zip(cols["hist_start"], cols["hist_end"], cols["request_ts"]):
            if rule == "strict":
                assert (ev_ts[start:end] < req).all()  # nothing from the request's own second
            lengths.append(int(end - start))
    if rule == "strict":  # 10 -> 0, three at 20 -> 1 each, two at 30 -> 4 each, 40 -> 6
        assert sorted(lengths) == [0, 1, 1, 1, 4, 4, 6]
    else:
        assert sorted(lengths) == [0, 1, 2, 3, 4, 5, 6]


def test_history_rule_option_in_the_spec(tmp_path):
    src = tmp_path / "UserBehavior.csv"
    write_taobao(src)
    strict = open_dataset(f"taobao:{src}", data_dir=str(tmp_path / "c"))
    old = open_dataset(f"taobao:{src}?history=file-order", data_dir=str(tmp_path / "c"))
    assert strict.path != old.path
    assert strict.info["history_rule"] == "strict" and old.info["history_rule"] == "file-order"
    with pytest.raises(ValueError, match="history="):
        open_dataset(f"taobao:{src}?history=loose", data_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="unknown option"):
        open_dataset(f"taobao:{src}?foo=1", data_dir=str(tmp_path / "c"))
