"""Parsing DoFns (beam_pipelines.parse): every bad-input kind becomes a dead letter with its reason,
line and file, is counted in Beam metrics, and good records parse exactly."""

import gzip
import json

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import parse, reading
from beam_pipelines.parse import Event


def _counters(result):
    counters = result.metrics().query(MetricsFilter().with_namespace(parse.METRICS_NAMESPACE))
    return {c.key.metric.name: c.committed for c in counters["counters"]}


def _run(pbegin_to_outputs, checks):
    """Builds a TestPipeline, applies assert_that to each (pcoll name, matcher); returns the
    counters."""
    p = test_pipeline.TestPipeline()
    outputs = pbegin_to_outputs(p)
    for name, matcher in checks.items():
        assert_that(outputs[name], matcher, label=f"Check{name}")
    result = p.run()
    result.wait_until_finish()
    return _counters(result)


def _reasons(expected):
    """Matcher: the dead letters' (line, reason) pairs equal `expected` (a list)."""

    def match(letters):
        equal_to(expected)([(d["line"], d["reason"]) for d in letters])

    return match


def _write(path, lines, compress=False):
    data = b"".join(line + b"\n" for line in lines)
    if compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return str(path)


REVIEW = {"reviewerID": "U1", "asin": "I1", "overall": 4.0, "unixReviewTime": 100}


def _review(**changes):
    record = {**REVIEW, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


REVIEW_LINES = [
    _review(),  # 1: good
    _review(reviewerID="U2", overall=..., unixReviewTime="200"),  # 2: good, unrated, str time
    b"   ",  # 3: blank, skipped
    _review()[:-1] + b', "summary": "\xff"}',  # 4
    b'{"reviewerID": "U1", "asin": ',  # 5
    b"[1, 2]",  # 6
    _review(reviewerID=...),  # 7
    _review(asin=""),  # 8
    _review(unixReviewTime=None),  # 9
    _review(reviewerID=17),  # 10
    _review(overall="great"),  # 11
    _review(unixReviewTime="yesterday"),  # 12
    _review(unixReviewTime=1.5),  # 13
    _review(overall=float("nan")),  # 14
    _review(asin="I2", unixReviewTime=300.0, overall="3"),  # 15: good
]
EXPECTED_REVIEW_DEAD = [
    (4, parse.UNDECODABLE_BYTES),
    (5, parse.BAD_JSON),
    (6, parse.NOT_AN_OBJECT),
    (7, parse.MISSING_REVIEWER_ID),
    (8, parse.MISSING_ASIN),
    (9, parse.MISSING_TIME),
    (10, parse.INVALID_ID),
    (11, parse.BAD_RATING),
    (12, parse.BAD_TIME),
    (13, parse.BAD_TIME),
    (14, parse.BAD_RATING),
]


@pytest.mark.parametrize("compress,name", [(False, "r.json"), (True, "r.json.gz"), (True, "r")])
def test_parse_reviews_every_bad_kind(tmp_path, compress, name):
    _write(tmp_path / name, REVIEW_LINES, compress=compress)
    counters = _run(
        lambda p: p | reading.ParseReviews([str(tmp_path / "r*")]),
        {
            "events": equal_to(
                [
                    Event("U1", "I1", 100, 4.0),
                    Event("U2", "I1", 200, None),
                    Event("U1", "I2", 300, 3.0),
                ]
            ),
            "dead_letters": _reasons(EXPECTED_REVIEW_DEAD),
        },
    )
    for kind in parse.REVIEW_KINDS:
        expected = sum(1 for _, k in EXPECTED_REVIEW_DEAD if k == kind)
        assert counters.get(kind, 0) == expected, kind
    assert counters["blank_lines"] == 1
    assert counters["lines_read"] == len(REVIEW_LINES)


def test_dead_letter_holds_file_line_and_record(tmp_path):
    path = _write(tmp_path / "r.json", [_review(), b"\xff\xfe not utf-8"])
    _run(
        lambda p: p | reading.ParseReviews([path]),
        {
            "dead_letters": equal_to(
                [
                    {
                        "file": path,
                        "line": 2,
                        "reason": parse.UNDECODABLE_BYTES,
                        "detail": "not valid UTF-8",
                        "record": "\\xff\\xfe not utf-8",  # nothing lost: bytes as escapes
                    }
                ]
            )
        },
    )


META_LINES = [
    # 1: 2014 literal: levels below the top one of every path, plus the brand, deduplicated.
    repr(
        {
            "asin": "I1",
            "categories": [["Beauty", "Skin", "Face"], ["Beauty", "Skin"], ["Beauty"]],
            "brand": "Acme",
        }
    ).encode(),
    # 2: 2018 JSON: one `category` path and a brand.
    json.dumps({"asin": "I2", "category": ["Beauty", "Hair"], "brand": "Zed"}).encode(),
    # 3: no categories and an empty brand: metadata without attributes.
    repr({"asin": "I3", "brand": " "}).encode(),
    b"{'asin': 'I4', 'categories': [['Beauty', 'x'",  # 4
    b"{'asin': 'I5', 'title': '\xc3\x28'}",  # 5
    b"['I6']",  # 6
    repr({"title": "no asin"}).encode(),  # 7
    repr({"asin": 7}).encode(),  # 8
    repr({"asin": "I9", "categories": "Beauty"}).encode(),  # 9
    repr({"asin": "I10", "brand": ["A"]}).encode(),  # 10
    b"__import__('os').system('echo never')",  # 11: never evaluated
]
EXPECTED_META_DEAD = [
    (4, parse.BAD_PYTHON_LITERAL),
    (5, parse.UNDECODABLE_BYTES),
    (6, parse.NOT_AN_OBJECT),
    (7, parse.META_MISSING_ASIN),
    (8, parse.INVALID_ID),
    (9, parse.BAD_META_FIELD),
    (10, parse.BAD_META_FIELD),
    (11, parse.BAD_PYTHON_LITERAL),
]


def test_parse_metadata_every_bad_kind(tmp_path):
    path = _write(tmp_path / "meta.json.gz", META_LINES, compress=True)
    counters = _run(
        lambda p: p | reading.ParseMetadata([path]),
        {
            "attributes": equal_to(
                [("I1", ("Acme", "Face", "Skin")), ("I2", ("Hair", "Zed")), ("I3", ())]
            ),
            "dead_letters": _reasons(EXPECTED_META_DEAD),
        },
    )
    for kind in parse.META_KINDS:
        assert counters.get(kind, 0) == sum(1 for _, k in EXPECTED_META_DEAD if k == kind), kind


def test_parse_s3rec_sequences(tmp_path):
    path = _write(
        tmp_path / "seq.txt",
        [b"1 5 6 7", b"2 8", b"3", b"4 9 x", b"5 0 1", b"6 \xff", b"", b"7 1 1 2"],
    )
    counters = _run(
        lambda p: p | reading.ParseS3RecSequences([path]),
        {
            "lines": equal_to(
                [(1, (path, 1, (5, 6, 7))), (2, (path, 2, (8,))), (7, (path, 8, (1, 1, 2)))]
            ),
            "dead_letters": _reasons(
                [
                    (3, parse.BAD_SEQUENCE_LINE),
                    (4, parse.BAD_SEQUENCE_LINE),
                    (5, parse.BAD_SEQUENCE_LINE),
                    (6, parse.UNDECODABLE_BYTES),
                ]
            ),
        },
    )
    assert counters[parse.BAD_SEQUENCE_LINE] == 3 and counters["blank_lines"] == 1


def test_parse_s3rec_item_attributes(tmp_path):
    path = tmp_path / "i2a.json"
    path.write_text(json.dumps({"1": [3, 2, 3], "2": [], "x": [1], "3": [0], "4": "a"}))
    _run(
        lambda p: p | reading.ParseS3RecItemAttributes([str(path)]),
        {
            "attributes": equal_to([(1, (2, 3)), (2, ())]),
            "dead_letters": _reasons([(None, parse.BAD_ITEM2ATTRIBUTES_ENTRY)] * 3),
        },
    )


@pytest.mark.parametrize(
    "content,kind",
    [
        (b'{"1": [1]', parse.BAD_ITEM2ATTRIBUTES),
        (b"[1, 2]", parse.BAD_ITEM2ATTRIBUTES),
        (b'{"1": [1], "\xff": [2]}', parse.UNDECODABLE_BYTES),
    ],
)
def test_a_broken_item_attributes_file_is_one_dead_letter(tmp_path, content, kind):
    path = tmp_path / "i2a.json"
    path.write_bytes(content)
    _run(
        lambda p: p | reading.ParseS3RecItemAttributes([str(path)]),
        {"attributes": equal_to([]), "dead_letters": _reasons([(None, kind)])},
    )


def test_missing_input_fails_naming_the_pattern(tmp_path):
    pattern = str(tmp_path / "nothing-*.json")
    with pytest.raises(Exception, match="nothing-"):
        _run(lambda p: p | reading.ParseReviews([pattern]), {})


def test_truncated_gzip_fails_naming_the_file(tmp_path):
    path = tmp_path / "r.json.gz"
    path.write_bytes(gzip.compress(b"".join([_review() + b"\n"] * 500))[:-30])
    with pytest.raises(Exception, match="r.json.gz"):
        _run(lambda p: p | reading.ParseReviews([str(path)]), {})


@pytest.mark.parametrize(
    "value,expected",
    [
        (5, 5),
        ("17", 17),
        (" 17 ", 17),
        (3.0, 3),
        (3.5, None),
        ("x", None),
        (True, None),
        (None, None),
        (float("inf"), None),
        ([1], None),
    ],
)
def test_parse_time(value, expected):
    assert parse.parse_time(value) == expected


@pytest.mark.parametrize(
    "value,expected",
    [(5, 5.0), ("4.5", 4.5), (float("nan"), None), ("five", None), (False, None), ({}, None)],
)
def test_parse_rating(value, expected):
    assert parse.parse_rating(value) == expected


def test_read_file_lines_keeps_numbers_and_strips_line_breaks(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\r\nb\n\n c\nlast")
    p = test_pipeline.TestPipeline()
    lines = p | beam.Create([str(path)]) | beam.ParDo(parse.ReadFileLines())
    assert_that(
        lines,
        equal_to(
            [
                (str(path), 1, b"a"),
                (str(path), 2, b"b"),
                (str(path), 4, b" c"),
                (str(path), 5, b"last"),
            ]
        ),
    )
    p.run().wait_until_finish()
