"""Public datasets in their native formats -> the columnar store.

* Taobao UserBehavior: CSV ``user,item,category,behavior,timestamp`` (behavior pv/buy/cart/fav).
* MovieLens: ``ratings.dat`` (``user::movie::rating::ts``) or ``ratings.csv``
  (``userId,movieId,rating,timestamp`` with a header); ``movies.dat`` / ``movies.csv`` beside it
  add the genres, ``users.dat`` (ML-1M) the gender / age / occupation.
* Amazon reviews: JSON lines, 2014/2018 (``reviewerID, asin, overall, unixReviewTime``) or 2023
  (``user_id, parent_asin|asin, rating, timestamp`` in ms).

Every builder keeps each user's interactions in time order. A sample's history is, by default
(``history_rule="strict"``), the user's interactions with a timestamp strictly earlier than the
sample's (SPEC section 2): events sharing the target's second are not its history, whatever their
order in the file, since they are not known at request time. ``history_rule="file-order"`` keeps
the old behaviour (every interaction before it in the time-sorted file, ties included). The
store's ``info["history_rule"]`` records the rule. The loader cuts histories to the last L. Labels:
MovieLens has impressions with an outcome (rating >= 4 is a click); Taobao and Amazon have
positives only, so each positive gets ``negatives`` items sampled by popularity (among items the
user has not interacted with) at the same moment and with the same history. Each user's samples
are split by time: the last ``test_frac`` go to test, the ``valid_frac`` before them to valid.

Bad rows are counted and reported with file and line (``BadRows``); a file with no usable row is
a ``ValueError``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..config import FieldSpec, Schema
from .store import Store, StoreWriter

SECONDS_PER_DAY = 86400
HISTORY_RULES = ("strict", "file-order")


@dataclass
class BadRows:
    """Counts bad rows and keeps the first few reasons as ``file:line: reason``."""

    path: str
    count: int = 0
    examples: List[str] = field(default_factory=list)
    max_examples: int = 20

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{self.path}:{line}: {reason}")

    def report(self, total: int) -> str:
        if not self.count:
            return f"{self.path}: {total} rows, no bad rows"
        head = "\n  ".join(self.examples)
        more = f"\n  ... and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return f"{self.path}: {self.count} bad rows of {total} skipped:\n  {head}{more}"


class IdMap:
    """Raw id -> contiguous id starting at 1 (0 = padding / unknown); shared by every loader."""

    def __init__(self):
        self.map: Dict = {}

    def __call__(self, raw) -> int:
        v = self.map.get(raw)
        if v is None:
            v = self.map[raw] = len(self.map) + 1
        return v

    @property
    def vocab(self) -> int:
        return len(self.map) + 1


@dataclass
class Interactions:
    """Parsed interactions, one row per event, with integer ids already remapped."""

    user: List[int] = field(default_factory=list)
    ts: List[int] = field(default_factory=list)
    fields: Dict[str, List[int]] = field(default_factory=dict)  # behavior fields (item first)
    label: List[float] = field(default_factory=list)  # only for datasets with outcomes

    def append(self, user: int, ts: int, values: Dict[str, int], label: Optional[float] = None) -> None:
        self.user.append(user)
        self.ts.append(ts)
        for k, v in values.items():
            self.fields.setdefault(k, []).append(v)
        if label is not None:
            self.label.append(label)

    def __len__(self) -> int:
        return len(self.user)


MAX_TIMESTAMP = 2 ** 62  # seconds; far beyond any date, well inside int64 arithmetic


def parse_timestamp(raw) -> int:
    """A timestamp field as int seconds: an int, or a number written as a JSON number or a string
    (``"1588615855070"``). Raises ValueError (with the reason) for anything else, non-finite
    values and values outside (0, 2**62)."""
    if isinstance(raw, bool):
        raise ValueError(f"timestamp {raw!r} is not a number")
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = int(text)
        except ValueError:
            try:
                raw = float(text)
            except ValueError:
                raise ValueError(f"timestamp {text[:30]!r} is not a number") from None
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"timestamp {raw} is not finite")
        raw = int(raw)
    if not isinstance(raw, int):
        raise ValueError(f"timestamp {raw!r} is not a number")
    if not 0 < raw < MAX_TIMESTAMP:
        raise ValueError(f"timestamp {raw} is outside (0, 2**62)")
    return raw


def require_rows(inter: Interactions, bad: BadRows, total: int) -> None:
    """Print the bad-row report; refuse a file with no usable row (ValueError naming it)."""
    print(bad.report(total), flush=True)
    if len(inter) == 0:
        raise ValueError(f"{bad.path}: no usable rows ({bad.count} bad rows of {total}); "
                         + ("first: " + bad.examples[0] if bad.examples else "the file is empty"))


def _context(ts: np.ndarray) -> Dict[str, np.ndarray]:
    return {"hour": (ts // 3600) % 24 + 1, "weekday": (ts // SECONDS_PER_DAY + 3) % 7 + 1}


def build_store(out_dir: str, inter: Interactions, schema: Schema, *, source: dict, negatives: int = 0,
                label_from_outcome: bool = False, user_features: Optional[Dict[str, np.ndarray]] = None,
                target_from_item: Optional[Dict[str, np.ndarray]] = None, valid_frac: float = 0.1,
                test_frac: float = 0.1, seed: int = 0, min_history: int = 1,
                history_rule: str = "strict") -> Store:
    """Events + samples from interactions (see the module docstring for the protocol).

    ``target_from_item[f]`` maps an item id to its value of target field f (for negatives).
    ``user_features[f]`` maps a user id to a feature value. ``history_rule``: ``strict`` (a
    sample's history holds only strictly earlier events) or ``file-order``.
    """
    if history_rule not in HISTORY_RULES:
        raise ValueError(f"history_rule: one of {HISTORY_RULES}, got {history_rule!r}")
    rng = np.random.default_rng(seed)
    user = np.asarray(inter.user, dtype=np.int64)
    ts = np.asarray(inter.ts, dtype=np.int64)
    cols = {k: np.asarray(v, dtype=np.int64) for k, v in inter.fields.items()}
    order = np.lexsort((ts, user))  # users contiguous, time-ordered; stable for equal times
    user, ts = user[order], ts[order]
    cols = {k: v[order] for k, v in cols.items()}
    label = np.asarray(inter.label, dtype=np.float32)[order] if label_from_outcome else None
    n = user.size
    starts = np.flatnonzero(np.concatenate([[True], user[1:] != user[:-1]]))
    ends = np.concatenate([starts[1:], [n]])
    user_start = np.repeat(starts, ends - starts)
    if history_rule == "strict":
        # the history of event i ends where the run of the user's events at i's second begins
        tie_start = np.concatenate([[True], (user[1:] != user[:-1]) | (ts[1:] != ts[:-1])])
        hist_end = np.maximum.accumulate(np.where(tie_start, np.arange(n), 0))
    else:
        hist_end = np.arange(n)
    rank = hist_end - user_start  # history length of this event
    # a sample per event with at least min_history history events: its history is [start, end)
    pos = np.flatnonzero(rank >= min_history)
    if pos.size == 0:
        raise ValueError(f"{source.get('path')}: no user has more than {min_history} interaction(s); "
                         "nothing to predict")
    item = cols["item"]
    s_user, s_ts, s_start, s_end = user[pos], ts[pos], user_start[pos], hist_end[pos]
    s_label = label[pos] if label_from_outcome else np.ones(pos.size, dtype=np.float32)
    s_targets = {f: cols[f][pos] for f in schema.target_fields}
    # per-user split by time (samples of one user are contiguous and time-ordered); one sample
    # per moment here, negatives are added below and follow their positive
    m = s_user.size
    first = np.flatnonzero(np.concatenate([[True], s_user[1:] != s_user[:-1]]))
    size = np.diff(np.concatenate([first, [m]]))
    r = np.arange(m) - np.repeat(first, size)
    nu = np.repeat(size, size)
    n_test = np.where(nu >= 3, np.maximum(1, np.rint(test_frac * nu)), 0)
    n_valid = np.where(nu >= 3, np.maximum(1, np.rint(valid_frac * nu)), 0)
    split = np.where(r >= nu - n_test, 2, np.where(r >= nu - n_test - n_valid, 1, 0))
    if negatives:
        # popularity-sampled negatives, the user's own items rejected (resampled once, then kept)
        counts = np.bincount(item, minlength=int(item.max()) + 1).astype(np.float64)
        counts[0] = 0
        p = counts / counts.sum()
        neg_item = rng.choice(p.size, size=(pos.size, negatives), p=p)
        width = p.size
        clash = np.isin(s_user[:, None] * width + neg_item, user * width + item)  # the user's own items
        if clash.any():
            neg_item[clash] = rng.choice(p.size, size=int(clash.sum()), p=p)
        rep = lambda a: np.repeat(a, negatives + 1)  # noqa: E731
        all_items = np.concatenate([item[pos][:, None], neg_item], 1).reshape(-1)
        s_targets = {f: (all_items if f == "item" else target_from_item[f][all_items]) for f in schema.target_fields}
        s_label = np.concatenate([s_label[:, None], np.zeros((pos.size, negatives), np.float32)], 1).reshape(-1)
        s_user, s_ts, s_start, s_end, split = rep(s_user), rep(s_ts), rep(s_start), rep(s_end), rep(split)
    ctx = _context(s_ts)
    feats = {}
    for f in schema.feature_fields:
        if f.name in ctx:
            feats[f"feat.{f.name}"] = ctx[f.name]
        else:
            feats[f"feat.{f.name}"] = user_features[f.name][s_user]
    hist_len = (s_end - s_start).astype(np.float32)
    dense = np.log1p(hist_len)[:, None].astype(np.float32)
    writer = StoreWriter(out_dir, schema, info=dict(source, history_rule=history_rule))
    writer.add_events({**{f.name: cols[f.name] for f in schema.behavior_fields}, "ts": ts})
    samples = {"user": s_user, "request_ts": s_ts, "hist_start": s_start, "hist_end": s_end, "label": s_label,
               "dense": dense, **{f"target.{k}": v for k, v in s_targets.items()}, **feats}
    for s, name in enumerate(("train", "valid", "test")):
        sel = split == s
        writer.add_samples(name, {k: v[sel] for k, v in samples.items()})
    return writer.close()


# ----------------------------------------------------------------------------------------------
# Taobao UserBehavior
# ----------------------------------------------------------------------------------------------
TAOBAO_ACTIONS = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}


def build_taobao(path: str, out_dir: str, seed: int = 0, negatives: int = 1, max_rows: Optional[int] = None,
                 history_rule: str = "strict") -> Store:
    bad = BadRows(path)
    users, items, cats = IdMap(), IdMap(), IdMap()
    inter = Interactions()
    item_cat: Dict[int, int] = {}
    total = 0
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if max_rows and total >= max_rows:
                break
            total += 1
            if len(row) != 5:
                bad.add(line_no, f"expected 5 fields (user,item,category,behavior,timestamp), got {len(row)}")
                continue
            u, it, c, b, t = (x.strip() for x in row)
            if b not in TAOBAO_ACTIONS:
                bad.add(line_no, f"unknown behavior {b!r} (pv, buy, cart, fav)")
                continue
            try:
                int(u), int(it), int(c)
            except ValueError:
                bad.add(line_no, "non-integer user, item or category")
                continue
            try:
                t = int(t)
                if not 0 < t < MAX_TIMESTAMP:
                    raise ValueError(f"timestamp {t} is outside (0, 2**62)")
            except ValueError as e:
                bad.add(line_no, str(e) if "outside" in str(e) else f"timestamp {t[:30]!r} is not an integer")
                continue
            iid, cid = items(it), cats(c)
            item_cat[iid] = cid
            inter.append(users(u), t, {"item": iid, "category": cid, "action": TAOBAO_ACTIONS[b]})
    require_rows(inter, bad, total)
    schema = Schema(
        behavior_fields=(FieldSpec("item", items.vocab), FieldSpec("category", cats.vocab), FieldSpec("action", 5)),
        target_fields=("item", "category"),
        feature_fields=(FieldSpec("hour", 25), FieldSpec("weekday", 8)),
        num_dense=1,
    )
    lookup = np.zeros(items.vocab, dtype=np.int64)
    for k, v in item_cat.items():
        lookup[k] = v
    return build_store(out_dir, inter, schema, source={"source": "taobao-userbehavior", "path": path,
                                                       "bad_rows": bad.count, "rows": total},
                       negatives=negatives, target_from_item={"category": lookup}, seed=seed,
                       history_rule=history_rule)


# ----------------------------------------------------------------------------------------------
# MovieLens
# ----------------------------------------------------------------------------------------------
def _read_movies(folder: str) -> Dict[str, str]:
    """movie id (raw) -> pipe-separated genres, from movies.dat or movies.csv if present."""
    out: Dict[str, str] = {}
    dat, csvp = os.path.join(folder, "movies.dat"), os.path.join(folder, "movies.csv")
    if os.path.exists(dat):
        with open(dat, encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\n").split("::")
                if len(parts) == 3:
                    out[parts[0]] = parts[2]
    elif os.path.exists(csvp):
        with open(csvp, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                out[row["movieId"]] = row.get("genres", "")
    return out


def _read_users_ml1m(folder: str) -> Dict[str, Tuple[str, str, str]]:
    path = os.path.join(folder, "users.dat")
    out = {}
    if os.path.exists(path):
        with open(path, encoding="latin-1") as f:
            for line in f:
                parts = line.rstrip("\n").split("::")
                if len(parts) >= 4:
                    out[parts[0]] = (parts[1], parts[2], parts[3])
    return out


def _movielens_rows(path: str, bad: BadRows) -> Iterable[Tuple[int, str, str, float, int]]:
    is_csv = path.endswith(".csv")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if is_csv:
                if line_no == 1 and line.lower().startswith("userid"):
                    continue
                parts = line.split(",")
            else:
                parts = line.split("::")
            if len(parts) != 4:
                bad.add(line_no, f"expected 4 fields (user, movie, rating, timestamp), got {len(parts)}")
                continue
            try:
                rating, t = float(parts[2]), int(parts[3])
            except ValueError:
                bad.add(line_no, "rating or timestamp is not a number")
                continue
            if not 0 < t < MAX_TIMESTAMP:
                bad.add(line_no, f"timestamp {t} is outside (0, 2**62)")
                continue
            if not (0 < rating <= 5):
                bad.add(line_no, f"rating {rating} outside (0, 5]")
                continue
            yield line_no, parts[0], parts[1], rating, t


def build_movielens(path: str, out_dir: str, seed: int = 0, history_rule: str = "strict") -> Store:
    folder = os.path.dirname(os.path.abspath(path))
    genres_of = _read_movies(folder)
    users_meta = _read_users_ml1m(folder)
    bad = BadRows(path)
    users, movies, genres = IdMap(), IdMap(), IdMap()
    inter = Interactions()
    movie_genre: Dict[int, int] = {}
    gender_of, age_of, occ_of = {}, {}, {}
    genders, ages, occs = IdMap(), IdMap(), IdMap()
    total = 0
    for total, (line_no, u, m, rating, t) in enumerate(_movielens_rows(path, bad), start=1):
        mid = movies(m)
        g = genres((genres_of.get(m) or "(unknown)").split("|")[0])
        movie_genre[mid] = g
        uid = users(u)
        if users_meta and u in users_meta:
            gd, ag, oc = users_meta[u]
            gender_of[uid], age_of[uid], occ_of[uid] = genders(gd), ages(ag), occs(oc)
        inter.append(uid, t, {"item": mid, "genre": g, "action": int(round(rating))}, label=float(rating >= 4))
    total += bad.count
    require_rows(inter, bad, total)
    feature_fields = [FieldSpec("hour", 25), FieldSpec("weekday", 8)]
    user_features = None
    if users_meta:
        user_features = {}
        for name, ids, mp in (("gender", genders, gender_of), ("age", ages, age_of), ("occupation", occs, occ_of)):
            arr = np.zeros(users.vocab, dtype=np.int64)
            for k, v in mp.items():
                arr[k] = v
            user_features[name] = arr
            feature_fields.append(FieldSpec(name, ids.vocab))
    schema = Schema(
        behavior_fields=(FieldSpec("item", movies.vocab), FieldSpec("genre", genres.vocab), FieldSpec("action", 6)),
        target_fields=("item", "genre"),
        feature_fields=tuple(feature_fields),
        num_dense=1,
    )
    return build_store(out_dir, inter, schema, source={"source": "movielens", "path": path, "bad_rows": bad.count,
                                                       "rows": total, "label": "rating >= 4"},
                       label_from_outcome=True, user_features=user_features, seed=seed, history_rule=history_rule)


# ----------------------------------------------------------------------------------------------
# Amazon reviews
# ----------------------------------------------------------------------------------------------
def build_amazon(path: str, out_dir: str, seed: int = 0, negatives: int = 1, history_rule: str = "strict") -> Store:
    bad = BadRows(path)
    users, items = IdMap(), IdMap()
    inter = Interactions()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            total += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                bad.add(line_no, f"not JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                bad.add(line_no, "not a JSON object")
                continue
            u = rec.get("reviewerID", rec.get("user_id"))
            it = rec.get("asin", rec.get("parent_asin"))
            rating = rec.get("overall", rec.get("rating"))
            ms = "unixReviewTime" not in rec and "timestamp" in rec  # 2023 files give milliseconds
            t = rec.get("unixReviewTime", rec.get("timestamp"))
            if u is None or it is None or rating is None or t is None:
                bad.add(line_no, "missing user (reviewerID/user_id), item (asin), rating (overall) or time")
                continue
            try:
                t = parse_timestamp(t)
            except ValueError as e:
                bad.add(line_no, str(e))
                continue
            if ms and t > 10 ** 11:  # a millisecond value (10**11 s is the year 5138)
                t //= 1000
            try:
                rating = float(rating)
            except (TypeError, ValueError):
                bad.add(line_no, f"rating {str(rating)[:30]!r} is not a number")
                continue
            if not (math.isfinite(rating) and 0 <= rating <= 5):
                bad.add(line_no, f"rating {rating} outside [0, 5]")
                continue
            inter.append(users(str(u)), t, {"item": items(str(it)), "action": max(1, min(5, int(round(rating))))})
    require_rows(inter, bad, total)
    schema = Schema(
        behavior_fields=(FieldSpec("item", items.vocab), FieldSpec("action", 6)),
        target_fields=("item",),
        feature_fields=(FieldSpec("hour", 25), FieldSpec("weekday", 8)),
        num_dense=1,
    )
    return build_store(out_dir, inter, schema, source={"source": "amazon-reviews", "path": path,
                                                       "bad_rows": bad.count, "rows": total},
                       negatives=negatives, seed=seed, history_rule=history_rule)


BUILDERS: Dict[str, Callable[..., Store]] = {"taobao": build_taobao, "movielens": build_movielens,
                                             "amazon": build_amazon}
