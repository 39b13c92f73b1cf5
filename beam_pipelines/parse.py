"""Reading and parsing the input formats: one DoFn per format, bad records to dead letters.

Inputs are read through Beam's file systems (local paths, gs://, s3://, ... alike), by a DoFn over
file paths rather than `ReadFromText`, so that every line keeps its number and undecodable bytes
turn into a dead letter instead of an exception.

A record that cannot be used is never an error: the DoFns count it under its kind (a Beam counter
of the same name in namespace `s3rec.parse`) and emit a dead letter on the `DEAD_LETTER` output:
  {"file": path, "line": 1-based line number or null, "reason": kind, "detail": message,
   "record": the line (undecodable bytes as backslash escapes)}
Only a file that cannot be opened or read to its end (missing, no permission, truncated gzip)
stops the job, with its path in the message.

Formats:
  * Amazon reviews, 2014 (`reviews_*_5.json[.gz]`) and 2018: one JSON object per line with
    reviewerID, asin, unixReviewTime and optionally overall (the rating).
  * Amazon metadata, 2014 (`meta_*.json[.gz]`, Python dict literals, read with
    `ast.literal_eval`, never `eval`) and 2018 (strict JSON): asin, categories (2014: a list of
    category paths) or category (2018: one path), brand.
  * Amazon Reviews 2023 (`<Category>.jsonl[.gz]` and `meta_<Category>.jsonl[.gz]`, strict JSON):
    reviews with user_id, parent_asin (the item; `asin` is a variant of it and is ignored),
    timestamp (MILLISECONDS since the epoch; kept in milliseconds, it only orders a user's
    reviews) and rating; metadata with parent_asin, main_category, categories (one flat category
    path, top level first), store and a details dict. The attributes follow the 2014 rule: every
    category level below the top one (categories[1:]), plus the brand, which is `store`, or
    `details["Brand"]` when there is no store.
    With --input_format auto a line is read as 2023 when it has the 2023 fields (a review with
    `user_id` or `parent_asin` but no `reviewerID`; metadata with `parent_asin`), so 2014, 2018
    and 2023 files may even be mixed; --input_format amazon2023 reads every line as 2023 (strict
    JSON, the 2023 dead-letter kinds) and --input_format amazon none.
  * S3-Rec benchmark format: `user item item ...` lines with positive integer ids, and one JSON
    object {item id: [attribute ids]}.
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import math
from collections.abc import Iterable
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

DEAD_LETTER = "dead_letter"
METRICS_NAMESPACE = "s3rec.parse"

# Dead-letter kinds (the `reason` of a dead letter and the keys of metadata.json's
# num_bad_records).
UNDECODABLE_BYTES = "undecodable_bytes"
BAD_JSON = "bad_json"
BAD_PYTHON_LITERAL = "bad_python_literal"
NOT_AN_OBJECT = "not_an_object"
MISSING_REVIEWER_ID = "missing_reviewerID"
MISSING_ASIN = "missing_asin"
MISSING_TIME = "missing_unixReviewTime"
INVALID_ID = "invalid_id"
BAD_RATING = "bad_rating"
BAD_TIME = "bad_time"
META_MISSING_ASIN = "meta_missing_asin"
BAD_META_FIELD = "bad_meta_field"
MISSING_USER_ID = "missing_user_id"  # 2023
MISSING_PARENT_ASIN = "missing_parent_asin"  # 2023
MISSING_TIMESTAMP = "missing_timestamp"  # 2023
META_MISSING_PARENT_ASIN = "meta_missing_parent_asin"  # 2023
BAD_SEQUENCE_LINE = "bad_sequence_line"
DUPLICATE_USER = "duplicate_user"
BAD_ITEM2ATTRIBUTES = "bad_item2attributes"
BAD_ITEM2ATTRIBUTES_ENTRY = "bad_item2attributes_entry"

REVIEW_KINDS = (
    UNDECODABLE_BYTES,
    BAD_JSON,
    NOT_AN_OBJECT,
    MISSING_REVIEWER_ID,
    MISSING_ASIN,
    MISSING_TIME,
    INVALID_ID,
    BAD_RATING,
    BAD_TIME,
)
META_KINDS = (
    UNDECODABLE_BYTES,
    BAD_PYTHON_LITERAL,
    NOT_AN_OBJECT,
    META_MISSING_ASIN,
    INVALID_ID,
    BAD_META_FIELD,
)
S3REC_KINDS = (
    UNDECODABLE_BYTES,
    BAD_SEQUENCE_LINE,
    DUPLICATE_USER,
    BAD_ITEM2ATTRIBUTES,
    BAD_ITEM2ATTRIBUTES_ENTRY,
)
REVIEW_2023_KINDS = (
    UNDECODABLE_BYTES,
    BAD_JSON,
    NOT_AN_OBJECT,
    MISSING_USER_ID,
    MISSING_PARENT_ASIN,
    MISSING_TIMESTAMP,
    INVALID_ID,
    BAD_RATING,
    BAD_TIME,
)
META_2023_KINDS = (
    UNDECODABLE_BYTES,
    BAD_JSON,
    NOT_AN_OBJECT,
    META_MISSING_PARENT_ASIN,
    INVALID_ID,
    BAD_META_FIELD,
)
# The kinds metadata.json's num_bad_records always lists (others are added when they occur).
AMAZON_KINDS = tuple(sorted(set(REVIEW_KINDS + META_KINDS)))
AMAZON_2023_KINDS = tuple(sorted(set(REVIEW_2023_KINDS + META_2023_KINDS)))
ALL_AMAZON_KINDS = tuple(sorted(set(AMAZON_KINDS + AMAZON_2023_KINDS)))
# Which record layouts a parser accepts, by --input_format.
AUTO, FORMAT_2014, FORMAT_2023 = "auto", "amazon", "amazon2023"
ALL_S3REC_KINDS = tuple(sorted(S3REC_KINDS))

_GZIP_MAGIC = b"\x1f\x8b"


class Event(NamedTuple):
    """One usable review: who interacted with what, when, and the rating if there is one."""

    user: str
    item: str
    time: int
    rating: Optional[float]


def dead_letter(file: str, line: Optional[int], reason: str, detail: str, record: Any) -> dict:
    """A dead-letter record (see the module docstring)."""
    if isinstance(record, bytes):
        record = record.decode("utf-8", errors="backslashreplace")
    return {"file": file, "line": line, "reason": reason, "detail": detail, "record": record}


@contextlib.contextmanager
def open_input(path: str):
    """Opens `path` through Beam's file systems, gunzipping when its name or first bytes say gzip.

    Raises OSError naming the path when it cannot be opened.
    """
    try:
        if path.endswith(".gz"):
            is_gzip = True
        else:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as probe:
                is_gzip = probe.read(2) == _GZIP_MAGIC
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # each file system raises its own error types
        raise OSError(f"Cannot open input file {path}: {e}") from e
    try:
        if is_gzip:
            # gzip.GzipFile splits lines in C, much faster than Beam's CompressedFile.readline.
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream
        else:
            yield raw
    finally:
        raw.close()


class ReadFileLines(beam.DoFn):
    """file path -> (path, 1-based line number, line bytes without the line break).

    Lines holding only whitespace are skipped (counted as `blank_lines`).
    """

    def __init__(self):
        self._files = Metrics.counter(METRICS_NAMESPACE, "files_read")
        self._lines = Metrics.counter(METRICS_NAMESPACE, "lines_read")
        self._blank = Metrics.counter(METRICS_NAMESPACE, "blank_lines")

    def process(self, path: str) -> Iterable[tuple]:
        line_no = 0
        blank = 0
        with open_input(path) as f:
            try:
                for line_no, line in enumerate(f, start=1):
                    if line.isspace():
                        blank += 1
                        continue
                    yield path, line_no, line.rstrip(b"\r\n")
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise OSError(f"Cannot read input file {path} after line {line_no}: {e}") from e
        self._files.inc()
        self._lines.inc(line_no)
        self._blank.inc(blank)


class _ParseLine(beam.DoFn):
    """Common part of the parsers: decoding, counters and dead letters.

    A subclass defines `parse(path, line_no, text)`, a generator of outputs and dead letters for
    one decoded line; undecodable bytes are dead-lettered here, before it is called.
    """

    def __init__(self, kinds: tuple[str, ...]):
        self._counters = {k: Metrics.counter(METRICS_NAMESPACE, k) for k in kinds}
        self._parsed = Metrics.counter(METRICS_NAMESPACE, f"{type(self).__name__}_ok")

    def _dead(self, path, line_no, kind, detail, record):
        self._counters[kind].inc()
        return beam.pvalue.TaggedOutput(
            DEAD_LETTER, dead_letter(path, line_no, kind, detail, record)
        )

    def process(self, element):
        """(path, line number, bytes) -> what `parse` makes of the decoded text."""
        yield from self._decode_and_parse(*element)

    def _decode_and_parse(self, path: str, line_no: Optional[int], raw: bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield self._dead(path, line_no, UNDECODABLE_BYTES, "not valid UTF-8", raw)
            return
        yield from self.parse(path, line_no, text)


def _single_line_id(value: Any) -> Optional[str]:
    """`value` if it is usable as a raw id (vocab files hold one id per line), else None."""
    if isinstance(value, str) and value.strip() and "\n" not in value and "\r" not in value:
        return value
    return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_time(value: Any) -> Optional[int]:
    """A unix time in seconds as int, from an int, an integral float or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return int(text)
    return None


def parse_rating(value: Any) -> Optional[float]:
    """A finite rating as float, from a number or a numeric string; None if it is not one."""
    if isinstance(value, bool):
        return None
    try:
        rating = float(value)
    except (TypeError, ValueError):
        return None
    return rating if math.isfinite(rating) else None


def is_2023_review(record: dict) -> bool:
    return "reviewerID" not in record and ("user_id" in record or "parent_asin" in record)


def is_2023_meta(record: dict) -> bool:
    return "parent_asin" in record


@beam.typehints.with_output_types(Event)
class ParseReviewLine(_ParseLine):
    """(path, line number, bytes) of a reviews file -> `Event`, or a dead letter.

    `layout`: AUTO (2014/2018 or 2023, recognized per line), FORMAT_2014 or FORMAT_2023.
    """

    _FIELDS = {
        False: (
            ("reviewerID", MISSING_REVIEWER_ID),
            ("asin", MISSING_ASIN),
            ("unixReviewTime", MISSING_TIME),
            "overall",
        ),
        True: (
            ("user_id", MISSING_USER_ID),
            ("parent_asin", MISSING_PARENT_ASIN),
            ("timestamp", MISSING_TIMESTAMP),
            "rating",
        ),
    }

    def __init__(self, layout: str = AUTO):
        super().__init__(tuple(sorted(set(REVIEW_KINDS + REVIEW_2023_KINDS))))
        self._layout = layout

    def parse(self, path, line_no, text):
        try:
            record = json.loads(text)
        except ValueError as e:
            yield self._dead(path, line_no, BAD_JSON, f"not JSON: {e}", text)
            return
        if not isinstance(record, dict):
            yield self._dead(path, line_no, NOT_AN_OBJECT, "a review must be a JSON object", text)
            return
        if self._layout == AUTO:
            is_2023 = is_2023_review(record)
        else:
            is_2023 = self._layout == FORMAT_2023
        (user_field, _), (item_field, _), (time_field, _), rating_field = self._FIELDS[is_2023]
        for field, kind in self._FIELDS[is_2023][:3]:
            if _missing(record.get(field)):
                yield self._dead(path, line_no, kind, f"no {field}", text)
                return
        user = _single_line_id(record[user_field])
        item = _single_line_id(record[item_field])
        if user is None or item is None:
            field = user_field if user is None else item_field
            yield self._dead(
                path, line_no, INVALID_ID, f"{field} is not a single-line string", text
            )
            return
        time = parse_time(record[time_field])
        if time is None:
            yield self._dead(path, line_no, BAD_TIME, f"{time_field} {record[time_field]!r}", text)
            return
        rating = None
        if record.get(rating_field) is not None:
            rating = parse_rating(record[rating_field])
            if rating is None:
                detail = f"{rating_field} {record[rating_field]!r}"
                yield self._dead(path, line_no, BAD_RATING, detail, text)
                return
        self._parsed.inc()
        yield Event(user, item, time, rating)


def meta_attributes(record: dict) -> Optional[tuple[str, ...]]:
    """The S3-Rec attributes of one metadata record: its brand and every category level below the
    top one, distinct and sorted; None when a field has the wrong type.

    2014 records hold `categories`, a list of category paths; 2018 records hold `category`, one
    path. Brands and categories share one name space, as in the reference.
    """
    names = set()
    paths = record.get("categories")
    if paths is None and record.get("category") is not None:
        paths = [record["category"]]
    if paths is not None:
        if not isinstance(paths, (list, tuple)):
            return None
        for path in paths:
            if not isinstance(path, (list, tuple)) or not all(isinstance(c, str) for c in path):
                return None
            names.update(c for c in path[1:] if c.strip())
    return _with_brand(names, record.get("brand"))


def meta_attributes_2023(record: dict) -> Optional[tuple[str, ...]]:
    """The S3-Rec attributes of one 2023 metadata record: the category levels below the top one
    (`categories[1:]`, a flat path) and the brand (`store`, or `details["Brand"]` when there is
    no store), distinct and sorted; None when a field has the wrong type. Missing, null or empty
    `categories`, `store` and `details` simply add nothing."""
    names = set()
    categories = record.get("categories")
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            return None
        names.update(c for c in categories[1:] if c.strip())
    details = record.get("details")
    if details is not None and not isinstance(details, dict):
        return None
    store = record.get("store")
    if store is not None and not isinstance(store, str):
        return None
    brand = store if store is not None and store.strip() else (details or {}).get("Brand")
    return _with_brand(names, brand)


def _with_brand(names: set, brand) -> Optional[tuple[str, ...]]:
    """The attribute names plus a non-blank brand, distinct and sorted; None when the brand is
    not a string or a name holds a line break (it could not round-trip through the vocab file)."""
    if brand is not None:
        if not isinstance(brand, str):
            return None
        if brand.strip():
            names.add(brand)
    if any("\n" in n or "\r" in n for n in names):
        return None
    return tuple(sorted(names))


@beam.typehints.with_output_types(tuple[str, tuple[str, ...]])
class ParseMetaLine(_ParseLine):
    """(path, line number, bytes) of a metadata file -> (item, attribute names), or a dead letter.

    2014/2018 lines are tried as strict JSON (2018) first, then as a Python literal (2014, with
    `ast.literal_eval`, never `eval`); 2023 lines must be strict JSON. `layout` as for
    `ParseReviewLine`.
    """

    def __init__(self, layout: str = AUTO):
        super().__init__(tuple(sorted(set(META_KINDS + META_2023_KINDS))))
        self._layout = layout

    def parse(self, path, line_no, text):
        try:
            record = json.loads(text)
        except ValueError as e:
            if self._layout == FORMAT_2023:
                yield self._dead(path, line_no, BAD_JSON, f"not JSON: {e}", text)
                return
            try:
                record = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
                detail = f"neither JSON nor a Python literal: {type(e).__name__}: {e}"
                yield self._dead(path, line_no, BAD_PYTHON_LITERAL, detail, text)
                return
        if not isinstance(record, dict):
            yield self._dead(path, line_no, NOT_AN_OBJECT, "a metadata record must be a dict", text)
            return
        if self._layout == AUTO:
            is_2023 = is_2023_meta(record)
        else:
            is_2023 = self._layout == FORMAT_2023
        field, missing_kind = (
            ("parent_asin", META_MISSING_PARENT_ASIN) if is_2023 else ("asin", META_MISSING_ASIN)
        )
        if _missing(record.get(field)):
            yield self._dead(path, line_no, missing_kind, f"no {field}", text)
            return
        asin = _single_line_id(record[field])
        if asin is None:
            yield self._dead(
                path, line_no, INVALID_ID, f"{field} is not a single-line string", text
            )
            return
        attributes = meta_attributes_2023(record) if is_2023 else meta_attributes(record)
        if attributes is None:
            detail = (
                "categories must be a list of strings, store a string and details a dict"
                if is_2023
                else "categories/category must be lists of strings and brand a string"
            )
            yield self._dead(path, line_no, BAD_META_FIELD, detail, text)
            return
        self._parsed.inc()
        yield asin, attributes


def _positive_int(token: str) -> Optional[int]:
    return int(token) if token.isascii() and token.isdigit() and int(token) > 0 else None


@beam.typehints.with_output_types(tuple[int, tuple[str, int, tuple[int, ...]]])
class ParseSequenceLine(_ParseLine):
    """(path, line number, bytes) of an S3-Rec sequences file -> (user, (path, line, items)).

    Ids are kept as they are; they must be positive integers and a user needs at least one item.
    """

    def __init__(self):
        super().__init__(S3REC_KINDS)

    def parse(self, path, line_no, text):
        ids = [_positive_int(t) for t in text.split()]
        if len(ids) < 2 or None in ids:
            detail = "expected 'user item item ...' with positive integer ids"
            yield self._dead(path, line_no, BAD_SEQUENCE_LINE, detail, text)
            return
        self._parsed.inc()
        yield ids[0], (path, line_no, tuple(ids[1:]))


@beam.typehints.with_output_types(tuple[int, tuple[int, ...]])
class ParseItemAttributesFile(_ParseLine):
    """S3-Rec item2attributes file path -> (item id, sorted distinct attribute ids) per entry.

    The file is one JSON object; a file that is not one is a single dead letter, an entry whose
    key or value is not a positive integer (list) is one dead letter each.
    """

    def __init__(self):
        super().__init__(S3REC_KINDS)

    def process(self, path: str):
        with open_input(path) as f:
            try:
                raw = f.read()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise OSError(f"Cannot read input file {path}: {e}") from e
        yield from self._decode_and_parse(path, None, raw)

    def parse(self, path, line_no, text):
        try:
            table = json.loads(text)
        except ValueError as e:
            yield self._dead(path, None, BAD_ITEM2ATTRIBUTES, f"not JSON: {e}", text)
            return
        if not isinstance(table, dict):
            detail = "expected a JSON object {item id: [attribute ids]}"
            yield self._dead(path, None, BAD_ITEM2ATTRIBUTES, detail, text)
            return
        for key, value in table.items():
            item = _positive_int(key.strip())
            ok = isinstance(value, list) and all(
                isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in value
            )
            if item is None or not ok:
                detail = "expected a positive integer item id mapped to positive attribute ids"
                record = json.dumps({key: value})
                yield self._dead(path, None, BAD_ITEM2ATTRIBUTES_ENTRY, detail, record)
                continue
            self._parsed.inc()
            yield item, tuple(sorted(set(value)))
