"""Seeded synthetic Amazon review data of any size, in the raw 2014 and 2023 formats.

    python -m benchmarks.synthetic_data --interactions 1000000 --output /tmp/syn-1m \\
        [--items N] [--popularity_exponent 0.9] [--taste 0] [--format 2014 2023] [--shards 8] \
        [--seed 0]

writes, per format, `<output>/<format>/reviews-SSSSS-of-NNNNN.jsonl.gz` and
`<output>/<format>/meta-SSSSS-of-NNNNN.jsonl.gz` (gzipped JSON lines; the 2014 metadata as Python
literals written with `repr`, like the 2014 release) and `<output>/summary.json`.

The data is NOT k-core, so that the job's k-core does real rounds:
  * users: activity from a power law (most users write one or two reviews, a few hundreds), so
    many users fall below a 5-core;
  * items: --items of them (default: one per 12 interactions), popularity from a power law
    (rank r weighs 1 / (r + 10) ** --popularity_exponent over a shuffled catalogue), so the head
    is popular and the long tail rare, as in a shop's catalogue; a user rarely reviews the same
    item twice. Items that draw no review are still in the metadata;
  * every item has a three-level category path under one top category and a brand; the brand is
    `store` in 2023 records, except for about one item in ten that has it only in
    `details["Brand"]` (and one in twenty has no brand at all);
  * tastes (--taste p > 0): each user has a favourite category path, and a share p of its
    reviews are of items of that path (by popularity within it), so users share tastes and a
    trained model's item embeddings cluster; with 0 every review is drawn from the whole
    catalogue.
Times: a user's reviews are a few days apart (2014: seconds; 2023: milliseconds, with the same
seconds). Lines are written in an order unrelated to users. The same arguments give the same
bytes (one numpy Generator seeded by --seed; gzip with mtime=0).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from typing import Optional

import numpy as np

TOP_CATEGORY = "Synthetic Goods"
_LEVEL1 = (
    "Skin Care",
    "Makeup",
    "Hair Care",
    "Fragrance",
    "Bath & Body",
    "Tools",
    "Nails",
    "Men's Grooming",
)
_LEVEL2 = ("Face", "Eyes", "Lips", "Body", "Sets", "Travel Size")
_LEVEL3 = ("Creams", "Cleansers", "Serums", "Pencils", "Sprays", "Oils", "Brushes", "Kits")
_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
FORMATS = ("2014", "2023")


def _codes(numbers: np.ndarray, width: int) -> list:
    """Distinct numbers -> distinct base-32 strings of `width` characters."""
    digits = np.stack([(numbers >> (5 * k)) & 31 for k in range(width)][::-1], axis=1)
    return ["".join(row) for row in _ALPHABET[digits]]


def make(
    num_interactions: int,
    seed: int = 0,
    num_items: Optional[int] = None,
    popularity_exponent: float = 0.9,
    taste: float = 0.0,
) -> dict:
    """The data as arrays: {user, item, time, rating} per interaction and the item catalogue."""
    if num_items is not None and num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}.")
    if not 0.0 <= taste <= 1.0:
        raise ValueError(f"taste must be in [0, 1], got {taste}.")
    if not popularity_exponent >= 0:
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent}.")
    rng = np.random.default_rng(seed)
    # User activity: 1 + a discrete power law, capped; enough users for the interactions.
    lengths = []
    total = 0
    while total < num_interactions:
        chunk = np.minimum(rng.zipf(1.9, size=max(1000, num_interactions // 4)), 300)
        lengths.append(chunk)
        total += int(chunk.sum())
    lengths = np.concatenate(lengths)
    cut = int(np.searchsorted(np.cumsum(lengths), num_interactions))
    lengths = lengths[: cut + 1].copy()
    lengths[-1] -= int(lengths.sum()) - num_interactions
    lengths = lengths[lengths > 0]
    num_users = len(lengths)
    if num_items is None:
        num_items = max(50, num_interactions // 12)
    # Item popularity: rank r has weight ~ 1 / (r + 10) ** exponent, ranks shuffled over the
    # catalogue.
    weights = 1.0 / (np.arange(num_items) + 10.0) ** popularity_exponent
    cdf = np.cumsum(weights / weights.sum())
    rank_to_item = rng.permutation(num_items)
    item = rank_to_item[
        np.minimum(np.searchsorted(cdf, rng.random(num_interactions)), num_items - 1)
    ]
    user = np.repeat(np.arange(num_users), lengths)
    start = 1_300_000_000 + rng.integers(0, 3000, size=num_users) * 86_400
    step = rng.integers(1, 6, size=num_interactions) * 86_400 + rng.integers(
        0, 3600, num_interactions
    )
    first = np.zeros(num_interactions, dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    step[first] = 0
    offsets = np.cumsum(step)
    base = np.repeat(offsets[first], lengths)
    time = np.repeat(start, lengths) + offsets - base
    rating = rng.choice(
        np.array([1.0, 2.0, 3.0, 4.0, 5.0]), p=[0.06, 0.06, 0.1, 0.2, 0.58], size=num_interactions
    )
    millis = rng.integers(0, 1000, size=num_interactions)
    # Names: sorting them does not reproduce the generation order.
    user_names = _codes(rng.choice(32**8, size=num_users, replace=False), 8)
    item_names = _codes(rng.choice(32**7, size=num_items, replace=False), 7)
    level1 = rng.integers(0, len(_LEVEL1), num_items)
    level2 = rng.integers(0, len(_LEVEL2), num_items)
    level3 = rng.integers(0, len(_LEVEL3), num_items)
    num_brands = max(5, num_items // 40)
    brand = rng.integers(0, num_brands, num_items)
    brand_place = rng.random(num_items)  # < 0.05: no brand; < 0.15: details only
    order = rng.permutation(num_interactions)
    if taste > 0:  # drawn after everything else: taste 0 gives the same bytes as before it existed
        item = _with_taste(
            rng, item, user, num_users, weights, rank_to_item, (level1, level2, level3), taste
        )
    return dict(
        user=user,
        item=item,
        time=time,
        millis=millis,
        rating=rating,
        order=order,
        user_names=user_names,
        item_names=item_names,
        level1=level1,
        level2=level2,
        level3=level3,
        brand=brand,
        brand_place=brand_place,
        num_users=num_users,
        num_items=num_items,
    )


def _with_taste(rng, item, user, num_users, weights, rank_to_item, levels, taste):
    """Each user gets a favourite leaf category (one of the 384 level-1/2/3 paths); each of its
    reviews is, with probability `taste`, of an item of that leaf drawn by popularity within it
    (the others keep their catalogue-wide draw). Users then share tastes, as a shop's do, and a
    trained model's item embeddings cluster by category."""
    level1, level2, level3 = levels
    leaf = (level1 * len(_LEVEL2) + level2) * len(_LEVEL3) + level3  # [items]
    num_leaves = len(_LEVEL1) * len(_LEVEL2) * len(_LEVEL3)
    weight = np.empty(len(weights))
    weight[rank_to_item] = weights  # popularity weight of each item
    by_leaf = np.argsort(leaf, kind="stable")
    cumulative = np.cumsum(weight[by_leaf])
    end = np.searchsorted(leaf[by_leaf], np.arange(num_leaves), side="right")
    start = np.concatenate([[0], end[:-1]])
    favourite = rng.integers(0, num_leaves, num_users)[user]  # per interaction
    focused = (rng.random(len(item)) < taste) & (end[favourite] > start[favourite])
    c = favourite[focused]
    base = np.where(start[c] > 0, cumulative[np.maximum(start[c] - 1, 0)], 0.0)
    target = base + rng.random(len(c)) * (cumulative[end[c] - 1] - base)
    position = np.clip(np.searchsorted(cumulative, target, side="right"), start[c], end[c] - 1)
    item = item.copy()
    item[focused] = by_leaf[position]
    return item


def _category(d, i):
    return [_LEVEL1[d["level1"][i]], _LEVEL2[d["level2"][i]], _LEVEL3[d["level3"][i]]]


def _brand(d, i):
    return f"Brand {int(d['brand'][i]):05d}"


def review_line(d, k: int, fmt: str) -> str:
    u, i = int(d["user"][k]), int(d["item"][k])
    if fmt == "2014":
        record = {
            "reviewerID": "A" + d["user_names"][u],
            "asin": "B" + d["item_names"][i],
            "reviewerName": "Someone",
            "helpful": [0, 0],
            "reviewText": "Synthetic review.",
            "overall": float(d["rating"][k]),
            "summary": "synthetic",
            "unixReviewTime": int(d["time"][k]),
            "reviewTime": "01 01, 2014",
        }
    else:
        parent = "B" + d["item_names"][i]
        record = {
            "rating": float(d["rating"][k]),
            "title": "synthetic",
            "text": "Synthetic review.",
            "images": [],
            "asin": parent if k % 3 else parent[:-1] + "X",
            "parent_asin": parent,
            "user_id": "AE" + d["user_names"][u],
            "timestamp": int(d["time"][k]) * 1000 + int(d["millis"][k]),
            "helpful_vote": 0,
            "verified_purchase": True,
        }
    return json.dumps(record)


def meta_line(d, i: int, fmt: str) -> str:
    asin = "B" + d["item_names"][i]
    place = d["brand_place"][i]
    if fmt == "2014":
        record = {
            "asin": asin,
            "title": f"Item {asin}",
            "salesRank": {TOP_CATEGORY: 1},
            "categories": [[TOP_CATEGORY, *_category(d, i)]],
        }
        if place >= 0.05:
            record["brand"] = _brand(d, i)
        return repr(record)
    record = {
        "main_category": TOP_CATEGORY,
        "title": f"Item {asin}",
        "average_rating": 4.2,
        "rating_number": 10,
        "features": [],
        "description": [],
        "price": None,
        "images": [],
        "videos": [],
        "store": _brand(d, i) if place >= 0.15 else None,
        "categories": [TOP_CATEGORY, *_category(d, i)],
        "details": {"Item Weight": "1 pound"},
        "parent_asin": asin,
        "bought_together": None,
    }
    if 0.05 <= place < 0.15:
        record["details"]["Brand"] = _brand(d, i)
    return json.dumps(record)


def _write_shards(directory, name, lines_of, count, shards):
    paths = []
    for s in range(shards):
        path = os.path.join(directory, f"{name}-{s:05d}-of-{shards:05d}.jsonl.gz")
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=3, filename="") as f,
        ):
            block = []
            for k in range(s, count, shards):
                block.append(lines_of(k))
                if len(block) >= 10_000:
                    f.write(("\n".join(block) + "\n").encode("utf-8"))
                    block = []
            if block:
                f.write(("\n".join(block) + "\n").encode("utf-8"))
        paths.append(path)
    return paths


def write(
    output: str,
    num_interactions: int,
    *,
    formats=FORMATS,
    shards: int = 4,
    seed: int = 0,
    num_items: Optional[int] = None,
    popularity_exponent: float = 0.9,
    taste: float = 0.0,
) -> dict:
    """Writes the files (see the module docstring); returns the summary."""
    d = make(num_interactions, seed, num_items, popularity_exponent, taste)
    summary = {
        "interactions": num_interactions,
        "users": d["num_users"],
        "items": d["num_items"],
        "items_reviewed": int(np.unique(d["item"]).size),
        "popularity_exponent": popularity_exponent,
        "taste": taste,
        "seed": seed,
        "formats": {},
    }
    for fmt in formats:
        directory = os.path.join(output, fmt)
        os.makedirs(directory, exist_ok=True)
        order = d["order"]
        reviews = _write_shards(
            directory,
            "reviews",
            lambda k, order=order, fmt=fmt: review_line(d, int(order[k]), fmt),
            num_interactions,
            shards,
        )
        meta = _write_shards(
            directory, "meta", lambda i, fmt=fmt: meta_line(d, i, fmt), d["num_items"], shards
        )
        summary["formats"][fmt] = {
            "reviews": os.path.join(directory, "reviews-*.jsonl.gz"),
            "metadata": os.path.join(directory, "meta-*.jsonl.gz"),
            "files": len(reviews) + len(meta),
        }
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--items", type=int, help="catalogue size (default: one item per 12 interactions)"
    )
    parser.add_argument(
        "--popularity_exponent",
        type=float,
        default=0.9,
        help="item of popularity rank r weighs 1 / (r + 10) ** this (0: uniform)",
    )
    parser.add_argument(
        "--taste",
        type=float,
        default=0.0,
        help="share of a user's reviews drawn from the user's favourite category (0: none)",
    )
    args = parser.parse_args(argv)
    summary = write(
        args.output,
        args.interactions,
        formats=args.format,
        shards=args.shards,
        seed=args.seed,
        num_items=args.items,
        popularity_exponent=args.popularity_exponent,
        taste=args.taste,
    )
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
