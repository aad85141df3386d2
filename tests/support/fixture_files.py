"""Small data files in the public datasets' native formats, for loader and end-to-end tests.

Every writer draws users 1..N, each with a random number of events at increasing timestamps
(``user_events``), then the format's own fields; a few bad rows are appended where the loader
must report them."""
import json
import os

import numpy as np


def user_events(rng, users, t0, max_gap, min_events=3, max_events=12):
    """Yields ``(user, k, t)``: user u has ``rng.integers(min_events, max_events)`` events, the
    k-th at ``t``, strictly increasing from ``t0 + u`` by gaps in ``[1, max_gap)``."""
    for u in range(1, users + 1):
        t = t0 + u
        for k in range(rng.integers(min_events, max_events)):
            t += int(rng.integers(1, max_gap))
            yield u, k, t


def write_taobao(path, users=20, bad=True):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for u, _, t in user_events(rng, users, 1511500000, 4000):
            f.write(f"{u},{rng.integers(1, 40)},{rng.integers(1, 6)},{rng.choice(['pv', 'cart', 'fav', 'buy'])},{t}\n")
        if bad:
            f.write("1,2,3\n")
            f.write("1,2,3,click,1511500000\n")
            f.write("a,b,c,pv,1511500000\n")


def write_movielens(folder, users=20):
    rng = np.random.default_rng(1)
    with open(os.path.join(folder, "ratings.dat"), "w") as f:
        for u, _, t in user_events(rng, users, 978300000, 4000):
            f.write(f"{u}::{rng.integers(1, 30)}::{rng.integers(1, 6)}::{t}\n")
        f.write("1::2::9::978300000\n")  # rating out of range
    with open(os.path.join(folder, "movies.dat"), "w") as f:
        for m in range(1, 30):
            f.write(f"{m}::Movie {m} (2000)::{['Drama', 'Comedy|Romance', 'Action'][m % 3]}\n")
    with open(os.path.join(folder, "users.dat"), "w") as f:
        for u in range(1, users + 1):
            f.write(f"{u}::{'MF'[u % 2]}::{[1, 18, 25][u % 3]}::{u % 20}::00000\n")


def write_movielens_csv(folder, users=20):
    rng = np.random.default_rng(2)
    with open(os.path.join(folder, "ratings.csv"), "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u, _, t in user_events(rng, users, 978300000, 4000):
            f.write(f"{u},{rng.integers(1, 30)},{rng.integers(1, 11) / 2},{t}\n")
    with open(os.path.join(folder, "movies.csv"), "w") as f:
        f.write("movieId,title,genres\n")
        for m in range(1, 30):
            f.write(f"{m},Movie {m},{['Drama', 'Comedy|Romance', 'Action'][m % 3]}\n")


def write_amazon(path, users=20):
    rng = np.random.default_rng(3)
    with open(path, "w") as f:
        for u, k, t in user_events(rng, users, 1400000000, 40000):
            if k % 2:
                rec = {"reviewerID": f"U{u}", "asin": f"B{rng.integers(1, 40):04d}", "overall": float(rng.integers(1, 6)),
                       "unixReviewTime": t}
            else:  # the 2023 field names, timestamps in ms
                rec = {"user_id": f"U{u}", "parent_asin": f"B{rng.integers(1, 40):04d}",
                       "rating": float(rng.integers(1, 6)), "timestamp": t * 1000}
            f.write(json.dumps(rec) + "\n")
        f.write("{broken\n")
        f.write(json.dumps({"asin": "B0001"}) + "\n")


def write_recbole(folder, prefix="fx", users=40):
    """RecBole atomic files ``prefix.{inter,item,user}`` with MovieLens-100K's fields."""
    rng = np.random.default_rng(0)
    with open(os.path.join(folder, f"{prefix}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u, _, t in user_events(rng, users, 880000000, 90000, 5, 30):
            f.write(f"{u}\t{rng.integers(1, 60)}\t{rng.integers(1, 6)}\t{t}\n")
    with open(os.path.join(folder, f"{prefix}.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for m in range(1, 60):
            f.write(f"{m}\tMovie {m}\t1995\t{['Drama', 'Comedy Romance', 'Action Thriller'][m % 3]}\n")
    with open(os.path.join(folder, f"{prefix}.user"), "w") as f:
        f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        for u in range(1, users + 1):
            f.write(f"{u}\t{15 + u}\t{'MF'[u % 2]}\t{['student', 'writer', 'other'][u % 3]}\t00000\n")
