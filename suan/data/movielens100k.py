"""MovieLens-100K, obtained at run time from the ``recbole==1.2.1`` wheel, and its CTR protocol.

``fetch()`` runs ``pip download --no-deps recbole==1.2.1`` into a temporary folder (recbole is
never imported or installed), extracts only ``recbole/dataset_example/ml-100k/ml-100k.{inter,
item,user}`` into ``$SUAN_DATA/movielens-100k`` (default ``~/.cache/suan``), checks their sizes
and sha256, and prints the licence terms and the citation. A second call is a no-op; a missing
network or a changed file is a clear error. The data are never committed nor shipped.

CTR protocol (``build_ctr``): a rating >= 4 is a click; each user's ratings in time order; a
sample is (the history of the user's ratings strictly earlier than it, with their rating as the
action field, the target movie, its label: 76% of ML-100K ratings share a second with another
of the user's ratings, and those are not history; ``history_rule="file-order"`` keeps them); the last 10% of each user's events (by time) form the test set
and the 10% before them the validation set. Behavior fields: movie, first genre, rating;
feature tokens: age bucket, gender, occupation; context: hour and weekday of the event.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, List, Optional

import numpy as np

from ..config import FieldSpec, Schema
from .real import BadRows, Interactions, IdMap, require_rows, build_store
from .paths import cache_root
from .store import Store, open_or_build

WHEEL = "recbole==1.2.1"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = {
    "ml-100k.inter": (1979230, "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
    "ml-100k.item": (66632, "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
    "ml-100k.user": (22697, "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
}
EXPECTED = {"rows": 100_000, "users": 943, "items": 1682}
LICENCE = """MovieLens 100K (GroupLens Research, University of Minnesota). Terms of use, in short: the data
may be used for research; it may not be redistributed without permission, used commercially, or
used to identify users; any publication using it must acknowledge it. Full terms:
https://files.grouplens.org/datasets/movielens/ml-100k-README.txt"""
CITATION = """F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context.
ACM Transactions on Interactive Intelligent Systems 5, 4, Article 19. https://doi.org/10.1145/2827872"""


def data_folder(data_dir: Optional[str] = None) -> str:
    return os.path.join(cache_root(data_dir), "movielens-100k")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: str) -> List[str]:
    """Problems with the files in ``folder`` (empty when all sizes and hashes match)."""
    problems = []
    for name, (size, digest) in FILES.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            problems.append(f"{path}: missing")
        elif os.path.getsize(path) != size:
            problems.append(f"{path}: {os.path.getsize(path)} bytes, expected {size}")
        elif _sha256(path) != digest:
            problems.append(f"{path}: sha256 differs from the expected {digest}")
    return problems


def fetch(data_dir: Optional[str] = None, verbose: bool = True, pip_args: Optional[List[str]] = None) -> str:
    """Fetch into the cache (no-op when already there and intact); returns the folder."""
    folder = data_folder(data_dir)
    if os.path.isdir(folder) and not verify(folder):
        if verbose:
            print(f"movielens-100k: already in {folder} (sizes and sha256 verified)")
            print(LICENCE)
            print("Cite:", CITATION)
        return folder
    if os.path.isdir(folder) and any(os.path.exists(os.path.join(folder, n)) for n in FILES):
        raise ValueError("movielens-100k: files in the cache do not match the expected sizes/sha256:\n  "
                         + "\n  ".join(verify(folder)) + f"\nremove {folder} to fetch again")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "--only-binary=:all:", WHEEL, "-d", tmp] + list(pip_args or [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (subprocess.TimeoutExpired, FileNotFoundError) as e:
            raise RuntimeError(f"movielens-100k: `pip download {WHEEL}` did not finish: {e}") from e
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"movielens-100k: could not download {WHEEL} from the package index (no network, "
                               f"or the index lacks it):\n{(proc.stderr or proc.stdout).strip()[-1500:]}")
        staging = folder + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            for name in FILES:
                with z.open(MEMBER_DIR + name) as src, open(os.path.join(staging, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        problems = verify(staging)
        if problems:
            shutil.rmtree(staging, ignore_errors=True)
            raise ValueError("movielens-100k: the downloaded files differ from the expected ones:\n  " + "\n  ".join(problems))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    if verbose:
        print(f"movielens-100k: fetched into {folder} (from the {WHEEL} wheel; sizes and sha256 verified)")
        print(LICENCE)
        print("Cite:", CITATION)
    return folder


# ----------------------------------------------------------------------------------------------
# RecBole atomic files
# ----------------------------------------------------------------------------------------------
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic(path: str, bad: Optional[BadRows] = None) -> Dict[str, list]:
    """A RecBole atomic file (``.inter`` / ``.item`` / ``.user``...): a tab-separated header of
    ``name:type`` (token, token_seq, float, float_seq), then rows. token -> str, token_seq ->
    list of str (space-separated), float -> float, float_seq -> list of float. Bad rows are
    counted in ``bad`` (file:line) and skipped."""
    bad = bad if bad is not None else BadRows(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n\r").split("\t")
        fields = []
        for h in header:
            name, sep, typ = h.partition(":")
            if not sep or typ not in ATOMIC_TYPES:
                raise ValueError(f"{path}:1: header field {h!r} is not name:type with type in {ATOMIC_TYPES}")
            fields.append((name, typ))
        cols: Dict[str, list] = {name: [] for name, _ in fields}
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\n\r")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != len(fields):
                bad.add(line_no, f"expected {len(fields)} tab-separated fields, got {len(parts)}")
                continue
            try:
                vals = []
                for (name, typ), raw in zip(fields, parts):
                    if typ == "token":
                        vals.append(raw)
                    elif typ == "token_seq":
                        vals.append(raw.split())
                    elif typ == "float":
                        vals.append(float(raw))
                    else:
                        vals.append([float(x) for x in raw.split()])
            except ValueError:
                bad.add(line_no, "a float field is not a number")
                continue
            for (name, _), v in zip(fields, vals):
                cols[name].append(v)
    return cols


def _age_bucket(age: int) -> int:
    """MovieLens-1M style buckets: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ -> 1..7."""
    for i, hi in enumerate((18, 25, 35, 45, 50, 56)):
        if age < hi:
            return i + 1
    return 7


def build_ctr(folder: str, out_dir: str, seed: int = 0, prefix: str = "ml-100k", history_rule: str = "strict") -> Store:
    """The CTR protocol of the module docstring on RecBole atomic files ``prefix.{inter,item,user}``."""
    inter_path = os.path.join(folder, f"{prefix}.inter")
    bad = BadRows(inter_path)
    inter_cols = read_atomic(inter_path, bad)
    item_cols = read_atomic(os.path.join(folder, f"{prefix}.item"))
    user_cols = read_atomic(os.path.join(folder, f"{prefix}.user"))
    genre_of = {i: (g[0] if g else "(none)") for i, g in zip(item_cols["item_id"], item_cols.get("class", []))}
    users, movies, genres = IdMap(), IdMap(), IdMap()
    genders, occs = IdMap(), IdMap()
    profile = {}
    for u, a, g, o in zip(user_cols["user_id"], user_cols["age"], user_cols["gender"], user_cols["occupation"]):
        profile[u] = (_age_bucket(int(a)), genders(g), occs(o))
    inter = Interactions()
    for i, (u, m, r, t) in enumerate(zip(inter_cols["user_id"], inter_cols["item_id"], inter_cols["rating"],
                                         inter_cols["timestamp"])):
        if u not in profile:
            bad.add(i + 2, f"user {u} is not in {prefix}.user")
            continue
        inter.append(users(u), int(t), {"item": movies(m), "genre": genres(genre_of.get(m, "(unknown)")),
                                        "action": int(round(r))}, label=float(r >= 4))
    require_rows(inter, bad, len(inter_cols["user_id"]))
    uf = {k: np.zeros(users.vocab, dtype=np.int64) for k in ("age", "gender", "occupation")}
    for raw, uid in users.map.items():
        a, g, o = profile[raw]
        uf["age"][uid], uf["gender"][uid], uf["occupation"][uid] = a, g, o
    schema = Schema(
        behavior_fields=(FieldSpec("item", movies.vocab), FieldSpec("genre", genres.vocab), FieldSpec("action", 6)),
        target_fields=("item", "genre"),
        feature_fields=(FieldSpec("age", 8), FieldSpec("gender", genders.vocab), FieldSpec("occupation", occs.vocab),
                        FieldSpec("hour", 25), FieldSpec("weekday", 8)),
        num_dense=1,
    )
    return build_store(out_dir, inter, schema, source={
        "source": "movielens-100k (recbole 1.2.1 atomic files)", "path": folder, "rows": len(inter_cols["user_id"]),
        "bad_rows": bad.count, "users": users.vocab - 1, "items": movies.vocab - 1, "label": "rating >= 4",
        "licence": LICENCE, "citation": CITATION}, label_from_outcome=True, user_features=uf, seed=seed,
        min_history=0, history_rule=history_rule)  # every rating is a sample (the first with an empty history)


# bump when the CTR protocol changes: the cache folder is keyed by it (v2: the history rule)
PROTOCOL_VERSION = 2


def open_store(data_dir: Optional[str] = None, seed: int = 0, history_rule: str = "strict") -> Store:
    """The CTR dataset (built once into the cache); needs ``suan data fetch movielens-100k``.
    The cache folder is keyed by the files' verified sha256, the protocol version and the rule."""
    folder = data_folder(data_dir)
    if verify(folder):
        raise FileNotFoundError(f"movielens-100k is not in {folder}: run `suan data fetch movielens-100k` first")
    out = os.path.join(cache_root(data_dir), f"movielens-100k-ctr-v{PROTOCOL_VERSION}-{history_rule}")  # no negatives: seed-free
    return open_or_build(out, lambda tmp: build_ctr(folder, tmp, seed=seed, history_rule=history_rule))
