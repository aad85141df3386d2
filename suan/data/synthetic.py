"""The embedded synthetic CTR data: deterministic by seed, generated chunk by chunk.

The world (fixed by the seed):
* items with a category (Zipf-popular categories), a brand (5 per category), a price level
  (1..10, around the brand's level) and a log-normal popularity;
* a category transition graph (each category has 3 likely successors);
* users with a profile (age 1..7, gender 1..2, city tier 1..5), a price preference that depends
  on age and city, and 3 category interests that drift over time (an interest is replaced by a
  successor of another, ~3% per behavior).

Behaviors: each user's stream of 30..(L-ish) actions (click / cart / buy / favourite) on items
picked from the current interests, from a successor of the previous category, or from the
popular catalogue; timestamps follow sessions (gaps of about a minute inside a session, hours to
days between sessions).

Impressions (samples): requests at random points of the timeline, one candidate each (from the
interests, a successor of the last behavior's category, or the popular catalogue) shown in a
slot 1..10 at an hour and weekday. The click is Bernoulli(sigmoid(z)) with

    z = b + 0.35 log popularity - 0.12 (slot - 1)                      position bias
          + 2.0 tanh(sum_j w_action * exp(-dt_j / 1 day) [cat_j = cat])  timing of recent behaviors
          + 1.2 tanh(sum_j exp(-dt_j / 6 h) [brand_j = brand])
          + 1.5 transition(last behavior's category -> cat)             order of behaviors
          + 0.8 current interest weight of cat                           latent, drifting
          - 0.25 |price - preference(age, city)| + gender x category + hour x category
          + 0.7 [age >= 5][price >= 7][city <= 2] - 0.5 [gender = 2][weekend][cat odd]

so the order and timing of recent behaviors, the profile and the context all matter: a
sequence model can beat a pooled one, and the interactions reward depth.

Each user's requests are split by time: the last 10% go to test, the 10% before to valid.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..config import FieldSpec, Schema
from .store import Store, StoreWriter, open_or_build

SECONDS_PER_DAY = 86400


@dataclass
class SyntheticConfig:
    num_users: int = 4000
    requests_per_user: int = 12  # mean; uniform in [requests/2, 3*requests/2]
    min_events: int = 30
    max_events: int = 150
    num_items: int = 20000
    num_categories: int = 100
    brands_per_category: int = 5
    valid_frac: float = 0.1
    test_frac: float = 0.1
    chunk_users: int = 2000
    seed: int = 0
    start_ts: int = 1_600_000_000
    span_days: float = 60.0

    def schema(self) -> Schema:
        return Schema(
            behavior_fields=(
                FieldSpec("item", self.num_items + 1),
                FieldSpec("category", self.num_categories + 1),
                FieldSpec("brand", self.num_categories * self.brands_per_category + 1),
                FieldSpec("action", 5),
            ),
            target_fields=("item", "category", "brand"),
            feature_fields=(
                FieldSpec("age", 8), FieldSpec("gender", 3), FieldSpec("city_tier", 6),
                FieldSpec("hour", 25), FieldSpec("weekday", 8), FieldSpec("slot", 11),
            ),
            num_dense=4,
        )


class _World:
    """Items, categories, transitions and affinities: everything shared by all users."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        C, I = cfg.num_categories, cfg.num_items
        self.C, self.I = C, I
        cat_w = 1.0 / np.arange(1, C + 1) ** 0.8
        self.cat_p = cat_w / cat_w.sum()
        # every category gets at least a few items, the rest by category popularity
        base = np.repeat(np.arange(C), 5)
        rest = rng.choice(C, size=I - base.size, p=self.cat_p)
        item_cat = np.sort(np.concatenate([base, rest]))  # items grouped by category
        self.item_cat = item_cat  # 0-based category of item index i (item id = i + 1)
        bpc = cfg.brands_per_category
        self.item_brand = item_cat * bpc + rng.integers(0, bpc, I)  # 0-based brand
        brand_level = rng.uniform(1, 10, C * bpc)
        self.item_price = np.clip(np.rint(brand_level[self.item_brand] + rng.normal(0, 1.5, I)), 1, 10)
        self.item_pop = np.exp(rng.normal(0, 1.0, I))
        self.log_pop = np.log(self.item_pop) - np.log(self.item_pop).mean()
        # per-category popularity CDF, offset by category index so one searchsorted serves all
        self.cat_start = np.searchsorted(item_cat, np.arange(C))
        self.cat_end = np.searchsorted(item_cat, np.arange(C), side="right")
        cum = np.zeros(I)
        for c in range(C):
            s, e = self.cat_start[c], self.cat_end[c]
            p = np.cumsum(self.item_pop[s:e])
            cum[s:e] = p / p[-1]
        self.cum_offset = cum + item_cat  # strictly increasing within a category, in [c, c+1]
        self.succ = np.stack([rng.permutation(C)[:3] for _ in range(C)])  # [C, 3] likely successors
        self.trans = np.zeros((C, C))
        for c in range(C):
            self.trans[c, self.succ[c]] = 1.0
            self.trans[c, c] = 0.5
        self.gender_aff = rng.normal(0, 0.4, (3, C))
        self.hour_aff = rng.normal(0, 0.4, (25, C))

    def item_in_category(self, cat: np.ndarray, rng) -> np.ndarray:
        u = rng.random(cat.shape) * 0.999999
        idx = np.searchsorted(self.cum_offset, cat + u)
        return np.clip(idx, self.cat_start[cat], self.cat_end[cat] - 1)

    def random_category(self, n, rng) -> np.ndarray:
        return rng.choice(self.C, size=n, p=self.cat_p)


def _lognormal_gap(rng, n):
    """Seconds between behaviors: sessions of ~1 minute gaps, ~8 hour gaps between sessions."""
    in_session = rng.random(n) < 0.85
    short = np.exp(rng.normal(math.log(55), 1.0, n))
    long = np.exp(rng.normal(math.log(8 * 3600), 1.0, n))
    return np.maximum(1, np.where(in_session, short, long)).astype(np.int64)


def _generate_chunk(world: _World, cfg: SyntheticConfig, U: int, user_base: int, rng: np.random.Generator):
    C = world.C
    age = rng.integers(1, 8, U)
    gender = rng.integers(1, 3, U)
    city = rng.integers(1, 6, U)
    pref = np.clip(1.5 + 0.8 * age - 0.5 * city + rng.normal(0, 1.0, U), 1, 10)
    n_ev = rng.integers(cfg.min_events, cfg.max_events + 1, U)
    E = int(n_ev.max())
    interests = np.stack([world.random_category(U, rng) for _ in range(3)], 1)  # [U, 3]
    int_w = rng.dirichlet(np.ones(3), U)
    ev_cat = np.zeros((U, E), np.int64)
    ev_item = np.zeros((U, E), np.int64)
    ev_act = np.zeros((U, E), np.int64)
    ev_ts = np.zeros((U, E), np.int64)
    snap = np.zeros((U, E + 1, 3), np.int64)  # interests before event j (and at the end)
    t = cfg.start_ts + (rng.random(U) * cfg.span_days * 0.5 * SECONDS_PER_DAY).astype(np.int64)
    last_cat = world.random_category(U, rng)
    rows = np.arange(U)
    for j in range(E):
        drift = rng.random(U) < 0.03
        slot = rng.integers(0, 3, U)
        new_int = world.succ[interests[rows, rng.integers(0, 3, U)], rng.integers(0, 3, U)]
        interests[rows[drift], slot[drift]] = new_int[drift]
        snap[:, j] = interests
        mode = rng.random(U)
        pick = (rng.random(U)[:, None] > np.cumsum(int_w, 1)).sum(1).clip(max=2)
        cat = np.where(mode < 0.55, interests[rows, pick],
                       np.where(mode < 0.8, world.succ[last_cat, rng.integers(0, 3, U)], world.random_category(U, rng)))
        ev_cat[:, j] = cat
        ev_item[:, j] = world.item_in_category(cat, rng)
        ev_act[:, j] = rng.choice(4, size=U, p=[0.8, 0.1, 0.05, 0.05]) + 1
        t = t + _lognormal_gap(rng, U)
        ev_ts[:, j] = t
        last_cat = cat
    snap[:, E] = interests

    # ---- requests ---------------------------------------------------------------------------
    lo, hi = max(1, cfg.requests_per_user // 2), max(1, (3 * cfg.requests_per_user) // 2)
    n_req = rng.integers(lo, hi + 1, U)
    R = int(n_req.sum())
    r_user = np.repeat(rows, n_req)
    # history end e in [1, n_ev]: behaviors [0, e) happened before the request
    e = 1 + (rng.random(R) * n_ev[r_user]).astype(np.int64)
    order = np.lexsort((e, r_user))
    r_user, e = r_user[order], e[order]
    last_ts = ev_ts[r_user, e - 1]
    req_ts = last_ts + np.exp(rng.normal(math.log(120), 1.0, R)).astype(np.int64) + 1
    lc = ev_cat[r_user, e - 1]
    mode = rng.random(R)
    cur_int = snap[r_user, e]
    cat = np.where(mode < 0.35, cur_int[np.arange(R), rng.integers(0, 3, R)],
                   np.where(mode < 0.65, world.succ[lc, rng.integers(0, 3, R)], world.random_category(R, rng)))
    item = world.item_in_category(cat, rng)
    brand = world.item_brand[item]
    price = world.item_price[item]
    slot = rng.integers(1, 11, R)
    hour = (req_ts // 3600) % 24 + 1
    weekday = (req_ts // SECONDS_PER_DAY + 3) % 7 + 1

    # ---- ground-truth click model -----------------------------------------------------------
    H = 50  # behaviors the ground truth looks at
    k = np.arange(H)
    hidx = e[:, None] - 1 - k[None, :]  # most recent first
    hvalid = hidx >= 0
    hidx = np.maximum(hidx, 0)
    h_cat = ev_cat[r_user[:, None], hidx]
    h_item = ev_item[r_user[:, None], hidx]
    h_act = ev_act[r_user[:, None], hidx]
    h_dt = (req_ts[:, None] - ev_ts[r_user[:, None], hidx]).astype(np.float64)
    w_act = np.array([0, 1.0, 1.5, 2.0, 1.2])[h_act]
    rec_cat = (hvalid * w_act * np.exp(-h_dt / SECONDS_PER_DAY) * (h_cat == cat[:, None])).sum(1)
    rec_brand = (hvalid * np.exp(-h_dt / (6 * 3600)) * (world.item_brand[h_item] == brand[:, None])).sum(1)
    interest_w = ((cur_int == cat[:, None]) * int_w[r_user]).sum(1)
    u_age, u_gender, u_city = age[r_user], gender[r_user], city[r_user]
    weekend = weekday >= 6
    z = (-2.3 + 0.35 * world.log_pop[item] - 0.12 * (slot - 1)
         + 2.0 * np.tanh(rec_cat) + 1.2 * np.tanh(rec_brand)
         + 1.5 * world.trans[lc, cat] + 0.8 * interest_w
         - 0.25 * np.abs(price - pref[r_user])
         + world.gender_aff[u_gender, cat] + world.hour_aff[hour, cat]
         + 0.7 * ((u_age >= 5) & (price >= 7) & (u_city <= 2))
         - 0.5 * ((u_gender == 2) & weekend & (cat % 2 == 1)))
    label = (rng.random(R) < 1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    oracle = z.astype(np.float32)

    # ---- dense features (0 = missing) -------------------------------------------------------
    n_hist = e.astype(np.float64)
    buys = np.cumsum(ev_act == 3, 1)[r_user, e - 1]
    dense = np.stack([
        np.log1p(n_hist),
        pref[r_user] + rng.normal(0, 0.5, R),  # a noisy survey answer
        np.log1p((req_ts - last_ts).astype(np.float64)) / 10.0,
        buys / n_hist + 1e-3,
    ], 1).astype(np.float32)
    dense[rng.random(dense.shape) < 0.07] = 0.0

    # ---- per-user time split ----------------------------------------------------------------
    first = np.concatenate([[0], np.cumsum(n_req)[:-1]])
    rank = np.arange(R) - np.repeat(first, n_req)  # 0..n_req-1 in time order
    nr = n_req[r_user]
    n_test = np.where(nr >= 3, np.maximum(1, np.rint(cfg.test_frac * nr)), 0)
    n_valid = np.where(nr >= 3, np.maximum(1, np.rint(cfg.valid_frac * nr)), 0)
    split = np.where(rank >= nr - n_test, 2, np.where(rank >= nr - n_test - n_valid, 1, 0))

    events = {"item": ev_item + 1, "category": ev_cat + 1, "brand": world.item_brand[ev_item] + 1,
              "action": ev_act, "ts": ev_ts}
    samples = {
        "user": user_base + r_user, "request_ts": req_ts, "hist_end": e, "user_local": r_user,
        "target.item": item + 1, "target.category": cat + 1, "target.brand": brand + 1,
        "feat.age": u_age, "feat.gender": u_gender, "feat.city_tier": u_city,
        "feat.hour": hour, "feat.weekday": weekday, "feat.slot": slot,
        "dense": dense, "label": label, "split": split, "oracle": oracle,
    }
    return n_ev, events, samples


def generate(out_dir: str, cfg: Optional[SyntheticConfig] = None, progress: bool = False) -> Store:
    """Generate the dataset into ``out_dir`` (chunk by chunk) and open it."""
    cfg = cfg or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    schema = cfg.schema()
    writer = StoreWriter(out_dir, schema, info={"source": "synthetic", "config": asdict(cfg), "history_rule": "strict",
                                                "generator": "suan.data.synthetic"})
    oracle = {name: ([], []) for name in ("train", "valid", "test")}  # (labels, true logits), first 1M
    for c0 in range(0, cfg.num_users, cfg.chunk_users):
        U = min(cfg.chunk_users, cfg.num_users - c0)
        chunk_rng = np.random.default_rng([cfg.seed, c0])
        n_ev, events, samples = _generate_chunk(world, cfg, U, c0, chunk_rng)
        # flatten the per-user event grid keeping users contiguous
        mask = np.arange(events["ts"].shape[1])[None, :] < n_ev[:, None]
        base = writer.add_events({k: v[mask] for k, v in events.items()})
        user_start = base + np.concatenate([[0], np.cumsum(n_ev)[:-1]])
        start = user_start[samples["user_local"]]
        samples["hist_start"] = start
        samples["hist_end"] = start + samples["hist_end"]
        for s, name in enumerate(("train", "valid", "test")):
            sel = samples["split"] == s
            writer.add_samples(name, {k: v[sel] for k, v in samples.items()})
            if sum(len(x) for x in oracle[name][0]) < 1_000_000:
                oracle[name][0].append(samples["label"][sel])
                oracle[name][1].append(samples["oracle"][sel])
        if progress:
            print(f"  synthetic: users {c0 + U}/{cfg.num_users}", flush=True)
    from ..metrics import auc

    # the ceiling: the AUC of the true click logit (on up to 1M samples per split)
    writer.info["oracle_auc"] = {name: auc(np.concatenate(y), np.concatenate(z)) if y else None
                                 for name, (y, z) in oracle.items()}
    return writer.close()


def load_or_generate(out_dir: str, cfg: Optional[SyntheticConfig] = None) -> Store:
    """Open ``out_dir`` if it holds this exact configuration, else (re)generate it (into a fresh
    folder renamed into place: see ``store.open_or_build``)."""
    cfg = cfg or SyntheticConfig()
    return open_or_build(out_dir, lambda tmp: generate(tmp, cfg),
                         usable=lambda store: store.info.get("config") == asdict(cfg))
