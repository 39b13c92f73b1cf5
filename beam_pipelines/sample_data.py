"""Makes the bundled sample: a small synthetic Amazon 2014 "Beauty"-like dataset with structure.

    python -m beam_pipelines.sample_data --output beam_pipelines/sample_data [--seed 2020]

writes, in the raw Amazon 2014 release format, so that the Beam job reads it like the real files:

  * ``reviews_Sample_5.json.gz``: one JSON object per line with the fields of the real
    ``reviews_*_5.json.gz`` files (``reviewerID``, ``asin``, ``reviewerName`` (absent for a few
    reviewers, as in the real data), ``helpful``, ``reviewText``, ``overall``, ``summary``,
    ``unixReviewTime`` (midnight UTC, like the real day-resolution times), ``reviewTime``).
    Lines are ordered by item, not by user or time, as in the real files.
  * ``meta_Sample.json.gz``: one Python-literal dict per line, written with ``repr()`` as the 2014
    release does (so it needs ``ast.literal_eval``, not ``json``): ``asin``, ``title``, ``price``,
    ``imUrl``, ``salesRank``, ``brand``, ``categories`` (a list of category paths). Some items have
    no brand, price or sales rank; a few have several category paths; a few reviewed items have no
    meta line at all, and some meta lines describe items nobody reviewed (the real meta files cover
    whole categories, the 5-core review files do not).

The data is 5-core (every user and every item has at least 5 reviews, so iterative 5-core filtering
removes nothing), each user's review times are strictly increasing (the chronological order does not
depend on a tie-break), and it has structure that a sequence model can learn:

  * items belong to one of twelve leaf categories under ``Beauty`` and to a brand of that
    category's group;
  * every user shops in one to three categories;
  * every item has three likely successors in its own category (the first one on a cycle through the
    category, so that every item is some item's likely successor; the other two preferring the same
    brand); a user follows a successor of the last item most of the time and otherwise jumps to an
    item drawn by a mild, Zipf-like popularity within one of their categories;
  * users never review the same item twice.

The same data is also written in the Amazon Reviews 2023 format (``Sample_2023.jsonl.gz`` and
``meta_Sample_2023.jsonl.gz``, strict JSON lines, see `to_2023`), so that both formats give the
job the same histories and attributes.

Same seed, same bytes: every random choice comes from one ``numpy.random.Generator`` seeded by
``--seed``, nothing iterates over a ``set`` of strings, and gzip is written with ``mtime=0`` and no
file name in its header.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import gzip
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np

_LOG = logging.getLogger(__name__)

DEFAULT_SEED = 2020
DEFAULT_NUM_USERS = 500
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
REVIEWS_FILE = "reviews_Sample_5.json.gz"
META_FILE = "meta_Sample.json.gz"
REVIEWS_2023_FILE = "Sample_2023.jsonl.gz"
META_2023_FILE = "meta_Sample_2023.jsonl.gz"
MAIN_CATEGORY_2023 = "All Beauty"
TOP_CATEGORY = "Beauty"
CORE = 5
# The job's flags for this sample (`s3rec_tf.train` preprocesses it on first use): two masking
# duplicates, and one k-core round: the data is CORE-core by construction, so the first round
# removes nothing and more unrolled rounds would only add empty Beam stages.
JOB_FLAGS = ("--dupe_factor", "2", "--kcore_max_rounds", "1")

# Leaf category paths below TOP_CATEGORY and the nouns that make their item titles.
_LEAVES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("Skin Care", "Face", "Creams & Moisturizers"), ("Day Cream", "Night Cream", "Moisturizer")),
    (("Skin Care", "Face", "Cleansers"), ("Foaming Cleanser", "Cleansing Gel", "Micellar Water")),
    (("Skin Care", "Body", "Moisturizers"), ("Body Lotion", "Body Butter", "Body Oil")),
    (("Makeup", "Eyes", "Mascara"), ("Mascara", "Lash Primer", "Waterproof Mascara")),
    (("Makeup", "Eyes", "Eyeliner"), ("Eyeliner", "Kohl Pencil", "Liquid Liner")),
    (("Makeup", "Lips", "Lipstick"), ("Lipstick", "Matte Lip Color", "Lip Crayon")),
    (("Makeup", "Nails", "Nail Polish"), ("Nail Lacquer", "Top Coat", "Base Coat")),
    (("Hair Care", "Shampoos"), ("Shampoo", "Dry Shampoo", "Clarifying Shampoo")),
    (("Hair Care", "Styling Products", "Gels"), ("Styling Gel", "Hair Pomade", "Curl Cream")),
    (("Fragrance", "Women's", "Eau de Parfum"), ("Eau de Parfum", "Perfume Spray", "Rollerball")),
    (("Bath & Body", "Cleansers", "Body Washes"), ("Body Wash", "Shower Gel", "Bath Foam")),
    (("Tools & Accessories", "Makeup Brushes & Tools"), ("Brush Set", "Blending Sponge", "Brush")),
)

# Brands per top-level group; a brand may sell in several groups, like real brands do.
_BRANDS: dict[str, tuple[str, ...]] = {
    "Skin Care": ("Aveline", "Dermaclair", "Burt's Meadow", "Purelle"),
    "Makeup": ("Lumiere Cosmetics", "Velvetine", "Kohl & Co.", "Nailique"),
    "Hair Care": ("Silkroot", "Maneframe", "Purelle"),
    "Fragrance": ("Eau Claire", "Musk & Amber"),
    "Bath & Body": ("Burt's Meadow", "Soapwell"),
    "Tools & Accessories": ("Brushworks", "Velvetine"),
}

# Second category paths that a few items also carry, as real items do.
_EXTRA_PATHS: tuple[tuple[str, ...], ...] = (
    ("Health & Personal Care", "Personal Care"),
    ("Beauty", "Skin Care"),
    ("Beauty", "Makeup"),
    ("Luxury Beauty",),
)

_ADJECTIVES = (
    "Hydrating",
    "Gentle",
    "Radiant",
    "Classic",
    "Ultra",
    "Pure",
    "Daily",
    "Intense",
    "Soft",
    "Fresh",
    "Natural",
    "Silky",
    "Bold",
    "Sheer",
    "Velvet",
    "Botanical",
)
_FIRST_NAMES = (
    "Anna",
    "Maria",
    "Linda",
    "Susan",
    "Karen",
    "Emily",
    "Jessica",
    "Sarah",
    "Laura",
    "Amy",
    "Michelle",
    "Kim",
    "Lisa",
    "Nicole",
    "Rachel",
    "Megan",
    "Julie",
    "Grace",
    "Chris",
    "David",
)
_WORDS = (
    "love",
    "this",
    "product",
    "skin",
    "great",
    "smell",
    "works",
    "well",
    "price",
    "bought",
    "again",
    "color",
    "nice",
    "soft",
    "would",
    "recommend",
    "not",
    "worth",
    "it",
    "my",
    "hair",
    "feels",
    "lasts",
    "all",
    "day",
    "little",
    "goes",
    "long",
    "way",
    "favorite",
    "gentle",
    "sensitive",
    "light",
    "texture",
    "packaging",
    "arrived",
    "quickly",
    "good",
    "value",
    "use",
)
_SUMMARIES = (
    "Love it",
    "Great product",
    "Works well",
    "Not for me",
    "Nice",
    "Five stars",
    "Good value",
    "Would buy again",
    "Okay",
    "Disappointed",
    "My favorite",
    "Does the job",
)
_RATINGS = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
_RATING_P = np.array([0.05, 0.06, 0.11, 0.20, 0.58])  # roughly the real Beauty distribution

_ITEMS_PER_LEAF = 27
_UNREVIEWED_PER_LEAF = 2  # meta-only items: nobody reviews them
_FOLLOW_PROB = 0.7  # next item = a likely successor of the last item
_SUCCESSOR_P = np.array([0.6, 0.25, 0.15])
_POPULARITY_EXPONENT = 0.8  # Zipf exponent of the within-category popularity
_HEAVY_USER_PROB = 0.015  # users with long histories (longer than max_seq_length = 50)
_MEAN_EXTRA_LENGTH = 7.0  # light users: 5 + Geometric; mean length about 12
_FIRST_DAY = datetime.date(2009, 1, 1)
_NO_META_PROB = 0.02
_MULTI_PATH_PROB = 0.08
_NO_BRAND_PROB = 0.15

_ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


@dataclasses.dataclass
class _Item:
    """One synthetic product; `successors` are the indices of its likely next items."""

    asin: str
    leaf: int
    brand: Optional[str]
    title: str
    reviewed: bool
    successors: list[int] = dataclasses.field(default_factory=list)


def _unique_ids(rng: np.random.Generator, count: int, make) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(make(rng), None)
    return list(seen)


def _asin(rng: np.random.Generator) -> str:
    # About 1 in 20 real Beauty asins are ISBN-like digit strings, some with leading zeros; they
    # must stay strings.
    if rng.random() < 0.05:
        return "".join(str(d) for d in rng.integers(0, 10, size=10))
    return "B00" + "".join(rng.choice(_ALNUM, size=7))


def _reviewer_id(rng: np.random.Generator) -> str:
    return "A" + "".join(rng.choice(_ALNUM, size=int(rng.integers(12, 14))))


def _make_items(rng: np.random.Generator) -> tuple[list[_Item], list[list[int]], list[np.ndarray]]:
    """Items, the reviewed item indices of each leaf, and their popularity weights."""
    per_leaf = _ITEMS_PER_LEAF + _UNREVIEWED_PER_LEAF
    asins = _unique_ids(rng, len(_LEAVES) * per_leaf, _asin)
    items: list[_Item] = []
    leaf_items: list[list[int]] = []
    leaf_popularity: list[np.ndarray] = []
    for leaf, (path, nouns) in enumerate(_LEAVES):
        brands = _BRANDS[path[0]]
        brand_p = 1.0 / np.arange(1, len(brands) + 1)
        brand_p /= brand_p.sum()
        reviewed = []
        for j in range(per_leaf):
            brand = None
            if rng.random() >= _NO_BRAND_PROB:
                brand = brands[rng.choice(len(brands), p=brand_p)]
            title = f"{rng.choice(_ADJECTIVES)} {rng.choice(nouns)}"
            if brand is not None:
                title = f"{brand} {title}"
            is_reviewed = j < _ITEMS_PER_LEAF
            items.append(_Item(asins[len(items)], leaf, brand, title, is_reviewed))
            if is_reviewed:
                reviewed.append(len(items) - 1)
        # Successors: the next item on a random cycle (so every item is somebody's likely next
        # item and stays above the 5-core), then two more, same-brand items preferred.
        cycle = rng.permutation(reviewed)
        for pos, index in enumerate(cycle):
            first = int(cycle[(pos + 1) % len(cycle)])
            others = [int(i) for i in reviewed if i != index and i != first]
            brand = items[index].brand
            weights = np.array([3.0 if brand and items[i].brand == brand else 1.0 for i in others])
            extra = rng.choice(others, size=2, replace=False, p=weights / weights.sum())
            items[index].successors = [first] + [int(i) for i in extra]
        popularity = 1.0 / np.arange(1, len(reviewed) + 1) ** _POPULARITY_EXPONENT
        leaf_items.append(reviewed)
        leaf_popularity.append(rng.permutation(popularity))
    return items, leaf_items, leaf_popularity


def _draw_popular(rng, leaf_items, leaf_popularity, leaf, visited) -> int:
    """A not yet visited item of `leaf` by popularity, or -1 if the user has seen all of them."""
    candidates = leaf_items[leaf]
    weights = np.where([i in visited for i in candidates], 0.0, leaf_popularity[leaf])
    if weights.sum() == 0.0:
        return -1
    return int(candidates[rng.choice(len(candidates), p=weights / weights.sum())])


def _make_sequences(rng, num_users, items, leaf_items, leaf_popularity) -> list[list[int]]:
    num_leaves = len(leaf_items)
    leaf_share = rng.dirichlet(np.full(num_leaves, 4.0))
    sequences = []
    for _ in range(num_users):
        heavy = rng.random() < _HEAVY_USER_PROB
        if heavy:
            length = int(rng.integers(45, 71))
            num_cats = 3
        else:
            length = CORE - 1 + int(rng.geometric(1.0 / _MEAN_EXTRA_LENGTH))
            length = min(length, 40)
            num_cats = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
        cats = rng.choice(num_leaves, size=num_cats, replace=False, p=leaf_share)
        cat_p = rng.dirichlet(np.full(num_cats, 2.0))
        sequence: list[int] = []
        visited: dict[int, None] = {}
        while len(sequence) < length:
            nxt = -1
            if sequence and rng.random() < _FOLLOW_PROB:
                successors = items[sequence[-1]].successors
                p = np.where([s in visited for s in successors], 0.0, _SUCCESSOR_P)
                if p.sum() > 0.0:
                    nxt = successors[rng.choice(len(successors), p=p / p.sum())]
            if nxt < 0:
                # Jump within the user's categories; users who exhausted them look elsewhere.
                for leaf in list(rng.choice(cats, size=num_cats, replace=False, p=cat_p)) + list(
                    rng.permutation(num_leaves)
                ):
                    nxt = _draw_popular(rng, leaf_items, leaf_popularity, int(leaf), visited)
                    if nxt >= 0:
                        break
            sequence.append(nxt)
            visited[nxt] = None
        sequences.append(sequence)
    return sequences


def k_core(sequences: Sequence[Sequence[int]], k: int = CORE) -> list[list[int]]:
    """Iterative k-core: drop items and users with fewer than k interactions until none is left."""
    current = [list(s) for s in sequences]
    while True:
        counts = collections.Counter(i for s in current for i in s)
        filtered = [[i for i in s if counts[i] >= k] for s in current]
        filtered = [s for s in filtered if len(s) >= k]
        if filtered == current:
            return current
        current = filtered


def _reviews(rng, sequences, items) -> list[dict]:
    reviewer_ids = _unique_ids(rng, len(sequences), _reviewer_id)
    records = []
    for user, sequence in enumerate(sequences):
        name = None
        if rng.random() > 0.03:
            name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_ALNUM[:26])}."
        day = _FIRST_DAY + datetime.timedelta(days=int(rng.integers(0, 4 * 365)))
        for item in sequence:
            # Strictly increasing days: the chronological order needs no tie-break.
            day += datetime.timedelta(days=int(rng.geometric(1.0 / 20.0)))
            total_votes = int(rng.geometric(0.5)) - 1
            record = {"reviewerID": reviewer_ids[user], "asin": items[item].asin}
            if name is not None:
                record["reviewerName"] = name
            text = " ".join(rng.choice(_WORDS, size=int(rng.integers(4, 16))))
            midnight = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
            record.update(
                {
                    "helpful": [int(rng.integers(0, total_votes + 1)), total_votes],
                    "reviewText": text.capitalize() + ".",
                    "overall": float(rng.choice(_RATINGS, p=_RATING_P)),
                    "summary": str(rng.choice(_SUMMARIES)),
                    "unixReviewTime": int(midnight.timestamp()),
                    "reviewTime": f"{day.month:02d} {day.day}, {day.year}",
                }
            )
            records.append(record)
    # The real files are grouped by item, not by user or time.
    records.sort(key=lambda r: (r["asin"], r["unixReviewTime"], r["reviewerID"]))
    return records


def _meta(rng, items, reviewed_counts) -> list[dict]:
    records = []
    for index, item in enumerate(items):
        if item.reviewed and rng.random() < _NO_META_PROB:
            continue
        path = [TOP_CATEGORY, *_LEAVES[item.leaf][0]]
        record = {"asin": item.asin, "title": item.title}
        if rng.random() < 0.85:
            record["price"] = round(float(rng.lognormal(np.log(15.0), 0.6)), 2)
        record["imUrl"] = (
            "http://ecx.images-amazon.com/images/I/" + "".join(rng.choice(_ALNUM, size=11)) + ".jpg"
        )
        if rng.random() < 0.9:
            # Popular items sell better: a lower rank.
            base = int(rng.integers(1, 2000)) * 1000
            record["salesRank"] = {TOP_CATEGORY: base // (1 + reviewed_counts.get(index, 0)) + 1}
        if item.brand is not None:
            record["brand"] = item.brand
        categories = [path]
        if rng.random() < _MULTI_PATH_PROB:
            categories.append(list(_EXTRA_PATHS[rng.integers(len(_EXTRA_PATHS))]))
        record["categories"] = categories
        records.append(record)
    records.sort(key=lambda r: r["asin"])
    return records


def generate(
    seed: int = DEFAULT_SEED, num_users: int = DEFAULT_NUM_USERS
) -> tuple[list[dict], list[dict]]:
    """(review records, meta records) of the sample; same arguments, same records."""
    if num_users < 50:
        raise ValueError(f"num_users = {num_users} is too small for a 5-core sample; use >= 50.")
    rng = np.random.default_rng(seed)
    items, leaf_items, leaf_popularity = _make_items(rng)
    sequences = k_core(_make_sequences(rng, num_users, items, leaf_items, leaf_popularity))
    reviewed_counts = collections.Counter(i for s in sequences for i in s)
    return _reviews(rng, sequences, items), _meta(rng, items, reviewed_counts)


def to_2023(reviews: list[dict], meta: list[dict], seed: int = DEFAULT_SEED):
    """The 2014 records in the Amazon Reviews 2023 layout, with the same meaning for the job.

    Reviews: user_id, parent_asin (= the 2014 asin), asin (a variant of it for about one review
    in five), timestamp in milliseconds, rating. Metadata: parent_asin, main_category,
    categories (one flat path: the top category, then every level below the top of the 2014
    paths, in sorted order), store = the brand for most items, the brand only in
    details["Brand"] for about one item in six, and neither for items without a brand.
    """
    rng = np.random.default_rng([seed, 2023])
    reviews_2023 = []
    for r in reviews:
        variant = rng.random() < 0.2
        reviews_2023.append(
            {
                "rating": r["overall"],
                "title": r["summary"],
                "text": r["reviewText"],
                "images": [],
                "asin": r["asin"][:-2] + "V" + r["asin"][-1] if variant else r["asin"],
                "parent_asin": r["asin"],
                "user_id": r["reviewerID"],
                "timestamp": r["unixReviewTime"] * 1000,
                "helpful_vote": r["helpful"][0],
                "verified_purchase": bool(rng.random() < 0.9),
            }
        )
    meta_2023 = []
    for m in meta:
        levels = sorted({c for path in m.get("categories", []) for c in path[1:]})
        details = {"Item Form": "Cream"}
        store = m.get("brand")
        if store is not None and rng.random() < 0.17:
            details["Brand"], store = store, None
        meta_2023.append(
            {
                "main_category": MAIN_CATEGORY_2023,
                "title": m["title"],
                "average_rating": 4.3,
                "rating_number": 10,
                "features": [],
                "description": [],
                "price": m.get("price"),
                "images": [],
                "videos": [],
                "store": store,
                "categories": [TOP_CATEGORY, *levels],
                "details": details,
                "parent_asin": m["asin"],
                "bought_together": None,
            }
        )
    return reviews_2023, meta_2023


def _write_gzip(path: str, lines: Sequence[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    # No file name and mtime=0 in the gzip header: the bytes depend on the content only.
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out,
    ):
        out.write(data)


def write(
    output_dir: str, seed: int = DEFAULT_SEED, num_users: int = DEFAULT_NUM_USERS
) -> tuple[str, str]:
    """Writes both files into `output_dir` (created if needed); returns their paths."""
    reviews, meta = generate(seed, num_users)
    os.makedirs(output_dir, exist_ok=True)
    reviews_path = os.path.join(output_dir, REVIEWS_FILE)
    meta_path = os.path.join(output_dir, META_FILE)
    _write_gzip(reviews_path, [json.dumps(r) for r in reviews])
    # repr() of a dict: the Python-literal lines of the 2014 meta files.
    _write_gzip(meta_path, [repr(m) for m in meta])
    reviews_2023, meta_2023 = to_2023(reviews, meta, seed)
    _write_gzip(os.path.join(output_dir, REVIEWS_2023_FILE), [json.dumps(r) for r in reviews_2023])
    _write_gzip(os.path.join(output_dir, META_2023_FILE), [json.dumps(m) for m in meta_2023])
    users = collections.Counter(r["reviewerID"] for r in reviews)
    _LOG.info(
        "Wrote %d reviews of %d users on %d items to %s and %d meta records to %s.",
        len(reviews),
        len(users),
        len({r["asin"]: None for r in reviews}),
        reviews_path,
        len(meta),
        meta_path,
    )
    return reviews_path, meta_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="directory to write into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--num_users", type=int, default=DEFAULT_NUM_USERS, help="users before 5-core filtering"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write(args.output, args.seed, args.num_users)


if __name__ == "__main__":
    main(sys.argv[1:])
