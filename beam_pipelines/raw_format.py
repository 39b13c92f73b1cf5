"""Converts the S3-Rec benchmark format into raw Amazon 2014 files, optionally with bad lines.

    python -m beam_pipelines.raw_format --sequences Beauty.txt \\
        --item2attributes Beauty_item2attributes.json --output /tmp/beauty_raw \\
        [--ids shuffled] [--bad_lines_per_kind 3]

writes `reviews_Converted_5.json.gz` (JSON lines) and `meta_Converted.json.gz` (Python literals),
from which `beam_pipelines.preprocess` must give back the same histories and attributes. Used by
the tests and benchmarks to run the raw-input path on real data.

* Raw ids: with ids="ordered" user u is "A%010d" % u, item i "B%09d" % i and attribute a
  "attribute-%05d" % a, so sorting raw ids reproduces the S3-Rec ids exactly; with
  ids="shuffled" the names come from a seeded permutation, so ids only match through the vocab.
* Times: a user's k-th item is reviewed a day after the (k-1)-th, except that with probability
  `tie_prob` it gets the same time when its asin sorts after the previous one (the job breaks
  ties by asin, so the order is kept). Lines are shuffled.
* Attributes: an item's first attribute becomes its brand, the others category levels below the
  top level "Beauty", split over two category paths that share one level (the job must take the
  union). Items with an empty attribute list get metadata without attributes.
* Bad lines: `bad_lines_per_kind` lines of every dead-letter kind of `parse.AMAZON_KINDS`, in
  both files where the kind applies, plus as many exact duplicate reviews (dropped, not bad) and
  blank lines (skipped). `RawFiles.expected_bad_records` holds the counts the job must report.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import sys
from typing import Optional

import numpy as np

from beam_pipelines import parse

_DAY = 86_400
_TOP_CATEGORY = "Beauty"


@dataclasses.dataclass(frozen=True)
class RawFiles:
    reviews: str
    metadata: str
    user_names: dict  # S3-Rec user id -> raw reviewerID
    item_names: dict  # S3-Rec item id -> raw asin
    attribute_names: dict  # S3-Rec attribute id -> raw attribute name
    expected_bad_records: dict  # {kind: count} over parse.AMAZON_KINDS
    num_duplicate_reviews: int


def read_s3rec(sequences_path: str, item2attributes_path: str):
    """-> ({user: [items]}, {item: [attributes]}) from the S3-Rec format."""
    sequences = {}
    with open(sequences_path) as f:
        for line in f:
            if line.strip():
                user, *items = map(int, line.split())
                sequences[user] = items
    with open(item2attributes_path) as f:
        item2attributes = {int(k): v for k, v in json.load(f).items()}
    return sequences, item2attributes


def _names(ids, template: str, shuffle: bool, rng: np.random.Generator) -> dict:
    ids = sorted(ids)
    numbers = rng.permutation(len(ids)) + 1 if shuffle else np.arange(1, len(ids) + 1)
    return {i: template % int(n) for i, n in zip(ids, numbers)}


def _review(user: str, item: str, time: int, rating: float) -> dict:
    return {
        "reviewerID": user,
        "asin": item,
        "reviewerName": f"Reviewer {user[-4:]}",
        "helpful": [0, 0],
        "reviewText": "Converted from the S3-Rec format.",
        "overall": rating,
        "summary": "converted",
        "unixReviewTime": time,
        "reviewTime": "01 01, 2014",
    }


def _meta(asin: str, attributes: list) -> dict:
    record = {"asin": asin, "title": f"Item {asin}", "salesRank": {_TOP_CATEGORY: 1}}
    if attributes:
        record["brand"] = attributes[0]
    rest = list(attributes[1:])
    if len(rest) > 2:
        # Two paths sharing their first level below the top one.
        record["categories"] = [[_TOP_CATEGORY, *rest[:2]], [_TOP_CATEGORY, rest[0], *rest[2:]]]
    else:
        record["categories"] = [[_TOP_CATEGORY, *rest]]
    return record


def _bad_review_lines(kind: str, user: str, item: str) -> Optional[bytes]:
    """One malformed reviews line of `kind` (mentioning real ids where a field is present)."""
    good = _review(user, item, 1_400_000_000, 5.0)

    def without(field):
        return json.dumps({k: v for k, v in good.items() if k != field}).encode()

    lines = {
        parse.UNDECODABLE_BYTES: json.dumps(good).encode()[:-1] + b', "summary": "\xff\xfe"}',
        parse.BAD_JSON: json.dumps(good).encode()[:-20],
        parse.NOT_AN_OBJECT: json.dumps([user, item, 5.0]).encode(),
        parse.MISSING_REVIEWER_ID: without("reviewerID"),
        parse.MISSING_ASIN: without("asin"),
        parse.MISSING_TIME: without("unixReviewTime"),
        parse.INVALID_ID: json.dumps({**good, "reviewerID": 12345}).encode(),
        parse.BAD_RATING: json.dumps({**good, "overall": "five stars"}).encode(),
        parse.BAD_TIME: json.dumps({**good, "unixReviewTime": "last tuesday"}).encode(),
    }
    return lines.get(kind)


def _bad_meta_lines(kind: str, item: str) -> Optional[bytes]:
    """One malformed metadata line of `kind` for the real asin `item`."""
    good = _meta(item, ["bad-brand", "bad-category"])
    lines = {
        parse.UNDECODABLE_BYTES: repr(good).encode()[:-1] + b", 'title': '\xc3\x28'}",
        parse.BAD_PYTHON_LITERAL: repr(good).encode()[:-15],
        parse.NOT_AN_OBJECT: repr([item, "Beauty"]).encode(),
        parse.META_MISSING_ASIN: repr({k: v for k, v in good.items() if k != "asin"}).encode(),
        parse.INVALID_ID: repr({**good, "asin": 42}).encode(),
        parse.BAD_META_FIELD: repr({**good, "categories": "Beauty"}).encode(),
    }
    return lines.get(kind)


def write_raw_amazon(
    sequences_path: str,
    item2attributes_path: str,
    output_dir: str,
    *,
    ids: str = "ordered",
    seed: int = 0,
    tie_prob: float = 0.0,
    bad_lines_per_kind: int = 0,
) -> RawFiles:
    """Writes the raw files for the given S3-Rec data; see the module docstring."""
    if ids not in ("ordered", "shuffled"):
        raise ValueError(f"ids must be 'ordered' or 'shuffled', got {ids!r}")
    rng = np.random.default_rng(seed)
    sequences, item2attributes = read_s3rec(sequences_path, item2attributes_path)
    shuffle = ids == "shuffled"
    user_names = _names(sequences, "A%010d", shuffle, rng)
    all_items = set(item2attributes) | {i for items in sequences.values() for i in items}
    item_names = _names(all_items, "B%09d", shuffle, rng)
    attribute_ids = {a for attributes in item2attributes.values() for a in attributes}
    attribute_names = _names(attribute_ids, "attribute-%05d", shuffle, rng)

    reviews = []
    for user, items in sequences.items():
        time = 1_300_000_000 + int(rng.integers(0, 1000)) * _DAY
        for k, item in enumerate(items):
            asin = item_names[item]
            if k and not (asin > item_names[items[k - 1]] and rng.random() < tie_prob):
                time += _DAY
            rating = float(rng.integers(1, 6))
            reviews.append(json.dumps(_review(user_names[user], asin, time, rating)).encode())
    meta = [
        repr(_meta(item_names[item], [attribute_names[a] for a in attributes])).encode()
        for item, attributes in sorted(item2attributes.items())
    ]

    expected = dict.fromkeys(parse.AMAZON_KINDS, 0)
    first_user = user_names[min(sequences)]
    first_item = item_names[min(all_items)]
    for kind in parse.AMAZON_KINDS:
        for _ in range(bad_lines_per_kind):
            for lines, line in (
                (reviews, _bad_review_lines(kind, first_user, first_item)),
                (meta, _bad_meta_lines(kind, first_item)),
            ):
                if line is not None:
                    lines.append(line)
                    expected[kind] += 1
    num_duplicates = bad_lines_per_kind
    reviews += [reviews[int(i)] for i in rng.integers(0, len(reviews), size=num_duplicates)]
    reviews += [b"   "] * bad_lines_per_kind
    meta += [b""] * bad_lines_per_kind

    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for name, lines in (
        ("reviews_Converted_5.json.gz", reviews),
        ("meta_Converted.json.gz", meta),
    ):
        path = os.path.join(output_dir, name)
        order = rng.permutation(len(lines))
        # mtime=0: the same input gives the same bytes.
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(b"".join(lines[i] + b"\n" for i in order))
        paths.append(path)
    return RawFiles(
        reviews=paths[0],
        metadata=paths[1],
        user_names=user_names,
        item_names=item_names,
        attribute_names=attribute_names,
        expected_bad_records=expected,
        num_duplicate_reviews=num_duplicates,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", required=True)
    parser.add_argument("--item2attributes", required=True)
    parser.add_argument("--output", required=True, help="Directory for the two .json.gz files.")
    parser.add_argument("--ids", choices=("ordered", "shuffled"), default="ordered")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tie_prob", type=float, default=0.0)
    parser.add_argument("--bad_lines_per_kind", type=int, default=0)
    args = parser.parse_args(argv)
    files = write_raw_amazon(
        args.sequences,
        args.item2attributes,
        args.output,
        ids=args.ids,
        seed=args.seed,
        tie_prob=args.tie_prob,
        bad_lines_per_kind=args.bad_lines_per_kind,
    )
    json.dump(
        {
            "reviews": files.reviews,
            "metadata": files.metadata,
            "expected_bad_records": files.expected_bad_records,
        },
        sys.stdout,
        indent=2,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
