"""Datasets edited for tests: another dataset with the same layout, as building it would give."""
import json
import os
import shutil

import numpy as np

from suan.data.store import Store, contents_fingerprint


def relabelled_copy(src: str, dst: str, rows: int = 1) -> Store:
    """A copy of the dataset folder ``src`` at ``dst`` with its first ``rows`` training labels
    flipped and the new contents' fingerprint recorded (a dataset edited in place, without it,
    is refused as damaged)."""
    shutil.copytree(src, dst)
    relabel(dst, rows)
    return Store(dst)


def relabel(path: str, rows: int = 1) -> None:
    """Flips the first ``rows`` training labels of the dataset folder ``path`` in place and records
    the new contents' fingerprint."""
    labels = np.memmap(os.path.join(path, "train", "label.bin"), dtype="<f4", mode="r+")
    labels[:rows] = 1.0 - labels[:rows]
    labels.flush()
    del labels
    meta_path = os.path.join(path, "schema.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["fingerprint"] = contents_fingerprint(path, meta)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
