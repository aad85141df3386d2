"""MovieLens-100K from the recbole wheel (skipped when the package index is unreachable) and the
RecBole atomic-file loader on fixture files."""
import os

import numpy as np
import pytest

from suan.data import movielens100k as ml
from suan.data.real import BadRows

from support.fixture_files import write_recbole


def test_atomic_file_loader(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttags:token_seq\tvec:float_seq\n"
                 "u1\ti1\t4\ta b\t1 2\n"
                 "u2\ti2\tnot-a-number\tc\t3\n"
                 "u3\ti3\n"
                 "u4\ti4\t2.5\t\t\n")
    bad = BadRows(str(p))
    cols = ml.read_atomic(str(p), bad)
    assert cols["user_id"] == ["u1", "u4"] and cols["rating"] == [4.0, 2.5]
    assert cols["tags"] == [["a", "b"], []] and cols["vec"] == [[1.0, 2.0], []]
    assert bad.count == 2 and f"{p}:3:" in bad.examples[0] and f"{p}:4:" in bad.examples[1]
    q = tmp_path / "bad.item"
    q.write_text("item_id\tname:token\n")
    with pytest.raises(ValueError, match="name:type"):
        ml.read_atomic(str(q))


def _check_split(store):
    tr, te = store.split("train").columns, store.split("test").columns
    for u in np.unique(np.asarray(te["user"])):
        t_train = np.asarray(tr["request_ts"])[np.asarray(tr["user"]) == u]
        t_test = np.asarray(te["request_ts"])[np.asarray(te["user"]) == u]
        if t_train.size:
            assert t_test.min() >= t_train.max()  # no test event precedes a training event of its user


def test_ctr_protocol_on_fixture_files(tmp_path):
    write_recbole(tmp_path, prefix="fx")
    store = ml.build_ctr(str(tmp_path), str(tmp_path / "out"), prefix="fx")
    d = store.describe()
    total = sum(d["samples"].values())
    assert total == store.meta["num_events"]  # every rating is a sample
    assert [f.name for f in store.schema.behavior_fields] == ["item", "genre", "action"]
    assert [f.name for f in store.schema.feature_fields] == ["age", "gender", "occupation", "hour", "weekday"]
    _check_split(store)


def test_fetch_reports_changed_files(tmp_path):
    folder = ml.data_folder(str(tmp_path))
    os.makedirs(folder)
    for name in ml.FILES:
        (open(os.path.join(folder, name), "w")).write("tampered")
    with pytest.raises(ValueError, match="do not match"):
        ml.fetch(str(tmp_path), verbose=False)


def test_fetch_without_index_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not download"):
        ml.fetch(str(tmp_path), verbose=False, pip_args=["--index-url", "http://127.0.0.1:9/simple", "--no-index",
                                                          "--find-links", str(tmp_path)])


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
    data_dir = os.environ.get("SUAN_DATA") or str(tmp_path_factory.mktemp("suan_data"))
    try:
        ml.fetch(data_dir, verbose=False)
    except RuntimeError as e:
        pytest.skip(f"the package index is not reachable, so recbole==1.2.1 cannot be fetched: {e}")
    return data_dir


def test_movielens100k_end_to_end(ml_dir, tmp_path):
    folder = ml.fetch(ml_dir, verbose=False)  # a second fetch is a no-op
    assert not ml.verify(folder)
    store = ml.open_store(ml_dir)
    assert store.meta["num_events"] == ml.EXPECTED["rows"] == 100_000
    assert store.info["users"] == ml.EXPECTED["users"] and store.info["items"] == ml.EXPECTED["items"]
    _check_split(store)
    from suan.train import TrainConfig, train

    res = train(TrainConfig(data="unused", model="lightsuan", grade="g0", max_len=20, epochs=1, batch_size=256,
                            lr=3e-3, embedding_lr=3e-3, out_dir=str(tmp_path / "run"), progress=False,
                            resume=False, model_overrides={"dropout": 0.0}), store)
    assert res["test"]["model"]["auc"] > 0.6
