"""The bundled sample: byte-reproducible, in the raw Amazon 2014 format, 5-core, learnable."""

import ast
import collections
import datetime
import gzip
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from beam_pipelines import sample_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(REPO, "beam_pipelines", "sample_data")
REVIEW_FIELDS = {
    "reviewerID": str,
    "asin": str,
    "helpful": list,
    "reviewText": str,
    "overall": float,
    "summary": str,
    "unixReviewTime": int,
    "reviewTime": str,
}


def _lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def reviews():
    return [json.loads(line) for line in _lines(os.path.join(COMMITTED, sample_data.REVIEWS_FILE))]


@pytest.fixture(scope="module")
def meta():
    path = os.path.join(COMMITTED, sample_data.META_FILE)
    return [ast.literal_eval(line) for line in _lines(path)]


@pytest.fixture(scope="module")
def sequences(reviews):
    """Chronological item sequences per user, users in a fixed order."""
    events = collections.defaultdict(list)
    for r in reviews:
        events[r["reviewerID"]].append((r["unixReviewTime"], r["asin"]))
    return [[asin for _, asin in sorted(events[user])] for user in sorted(events)]


def test_module_regenerates_the_committed_bytes(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "beam_pipelines.sample_data", "--output", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    for name in (sample_data.REVIEWS_FILE, sample_data.META_FILE):
        committed = os.path.join(COMMITTED, name)
        fresh = tmp_path / name
        assert _lines(fresh) == _lines(committed), f"{name}: content differs from the committed one"
        with open(committed, "rb") as f:
            assert fresh.read_bytes() == f.read(), f"{name}: same content, different gzip bytes"


def test_seed_changes_the_data():
    reviews_a, meta_a = sample_data.generate(seed=1, num_users=60)
    reviews_b, meta_b = sample_data.generate(seed=2, num_users=60)
    assert reviews_a != reviews_b and meta_a != meta_b
    assert sample_data.generate(seed=1, num_users=60) == (reviews_a, meta_a)


def test_too_few_users_is_refused():
    with pytest.raises(ValueError, match="num_users"):
        sample_data.generate(num_users=10)


def test_committed_files_are_small():
    total = sum(os.path.getsize(os.path.join(COMMITTED, n)) for n in os.listdir(COMMITTED))
    assert total < 1_000_000


def test_reviews_have_the_2014_fields(reviews):
    assert reviews
    for r in reviews:
        for field, kind in REVIEW_FIELDS.items():
            assert isinstance(r[field], kind), (field, r)
        assert set(r) - set(REVIEW_FIELDS) <= {"reviewerName"}
        votes_up, votes = r["helpful"]
        assert 0 <= votes_up <= votes
        assert r["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert r["unixReviewTime"] % 86400 == 0
        month, day, year = r["reviewTime"].replace(",", "").split()
        assert (int(year), int(month), int(day)) == _utc_date(r["unixReviewTime"])
    assert 0 < sum("reviewerName" not in r for r in reviews) < len(reviews) // 10
    # ISBN-like asins with leading zeros stay strings.
    assert any(r["asin"].isdigit() for r in reviews)


def _utc_date(seconds):
    d = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return d.year, d.month, d.day


def test_meta_is_python_literals_like_the_2014_release(meta, reviews):
    meta_lines = _lines(os.path.join(COMMITTED, sample_data.META_FILE))
    # repr() quotes strings with single quotes: not JSON.
    with pytest.raises(json.JSONDecodeError):
        json.loads(meta_lines[0])
    asins = [m["asin"] for m in meta]
    assert len(set(asins)) == len(asins)
    for m in meta:
        assert isinstance(m["title"], str) and isinstance(m["imUrl"], str)
        assert m["categories"] and all(
            isinstance(path, list) and path and all(isinstance(c, str) for c in path)
            for path in m["categories"]
        )
        assert m["categories"][0][0] == "Beauty" and len(m["categories"][0]) >= 3
    assert 0 < sum("brand" not in m for m in meta) < len(meta) // 3
    assert any(len(m["categories"]) > 1 for m in meta)
    assert any("'" in m.get("brand", "") for m in meta)
    reviewed = {r["asin"] for r in reviews}
    described = set(asins)
    assert 0 < len(reviewed - described) < 10, "a few reviewed items have no meta line"
    assert described - reviewed, "some meta lines describe items nobody reviewed"


def test_is_five_core_and_chronologically_unambiguous(reviews, sequences):
    user_counts = collections.Counter(r["reviewerID"] for r in reviews)
    item_counts = collections.Counter(r["asin"] for r in reviews)
    assert min(user_counts.values()) >= 5
    assert min(item_counts.values()) >= 5
    assert len(set((r["reviewerID"], r["asin"]) for r in reviews)) == len(reviews)
    assert sample_data.k_core(sequences) == sequences
    times = collections.defaultdict(list)
    for r in reviews:
        times[r["reviewerID"]].append(r["unixReviewTime"])
    assert all(len(set(t)) == len(t) for t in times.values()), "equal times within a user"
    assert 400 <= len(user_counts) <= 600 and 200 <= len(item_counts) <= 600


def _pessimistic_rank(scores, target):
    return 1 + int(np.sum(np.delete(scores, target) >= scores[target]))


def test_transitions_beat_popularity_by_a_wide_margin(sequences):
    """Leave-one-out HR@10 over all items: last item -> its most frequent successors vs popular."""
    vocab = {asin: i for i, asin in enumerate(sorted({a for s in sequences for a in s}))}
    num_items = len(vocab)
    popularity = np.zeros(num_items)
    transitions = np.zeros((num_items, num_items))
    for s in sequences:
        train = [vocab[a] for a in s[:-1]]
        np.add.at(popularity, train, 1.0)
        np.add.at(transitions, (train[:-1], train[1:]), 1.0)
    # Popularity breaks ties between equally frequent successors (and scores unseen ones).
    tie_break = popularity / (2.0 * popularity.sum())
    pop_hits, transition_hits, lengths = [], [], []
    for s in sequences:
        target, last = vocab[s[-1]], vocab[s[-2]]
        pop_hits.append(_pessimistic_rank(popularity, target) <= 10)
        transition_hits.append(_pessimistic_rank(transitions[last] + tie_break, target) <= 10)
        lengths.append(len(s))
    pop_hr, transition_hr = float(np.mean(pop_hits)), float(np.mean(transition_hits))
    logging.getLogger(__name__).info(
        "users %d, items %d, mean length %.2f, max %d; HR@10 popularity %.4f, transitions %.4f",
        len(sequences),
        num_items,
        np.mean(lengths),
        max(lengths),
        pop_hr,
        transition_hr,
    )
    assert 8.0 <= np.mean(lengths) <= 20.0
    assert max(lengths) > 50, "some user is longer than max_seq_length"
    assert pop_hr > 0.0
    assert transition_hr >= pop_hr + 0.4, (pop_hr, transition_hr)
