"""Writing files: any file under a temporary name, single text files written in parts and joined
in order, dead letters and metadata.json. (TFRecord shards: `beam_pipelines.examples`.)

Every file is written under a temporary name in its own directory (`.tmp-<random>-<name>`) and
renamed when complete, so that a failed or retried bundle never leaves a half-written file under
a final name. All I/O goes through Beam's `FileSystems` (local paths, gs://, s3://, ...).

Single files (sequences.txt, the vocab files, item2attributes.json, the dead letters) are written
in parallel as parts under `<output>/.parts/`, each part by one worker that sorts only its own
entries; one step then copies the parts, in order, into the final file in fixed-size chunks
(constant memory) and deletes them.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import algorithms
from beam_pipelines.stats import METRICS_NAMESPACE
from s3rec_tf import schema  # the data contract: file names, metadata keys (no TensorFlow)

_LOG = logging.getLogger(__name__)
PARTS_DIR = ".parts"
TEMP_PREFIX = ".tmp-"
DEAD_LETTER_FILE = schema.DEAD_LETTER_PREFIX + "-00000-of-00001.jsonl"
# Lines per part of a single-file output.
LINES_PER_PART = 50_000
_COPY_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# Files under a temporary name.
# ---------------------------------------------------------------------------------------------
def temp_path(path: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{name}")


class AtomicFile:
    """`with AtomicFile(path) as f: f.write(...)`: written under a temporary name, renamed to
    `path` on success and deleted on failure."""

    def __init__(self, path: str, mime_type: str = "application/octet-stream"):
        self._path = path
        self._temp = temp_path(path)
        self._mime_type = mime_type

    def __enter__(self):
        self._file = FileSystems.create(
            self._temp, mime_type=self._mime_type, compression_type=CompressionTypes.UNCOMPRESSED
        )
        return self._file

    def __exit__(self, exc_type, exc, tb):
        self._file.close()
        if exc_type is not None:
            try:
                FileSystems.delete([self._temp])
            except Exception:  # the original error matters more
                pass
            return False
        if FileSystems.exists(self._path):  # a retried bundle: replace the earlier file
            FileSystems.delete([self._path])
        FileSystems.rename([self._temp], [self._path])
        return False


def write_file(path: str, content) -> None:
    with AtomicFile(path) as f:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)


# ---------------------------------------------------------------------------------------------
# Single files in parts.
# ---------------------------------------------------------------------------------------------
def part_path(output: str, relative_path: str, part_key) -> str:
    """Where the part `part_key` of the output file `relative_path` is written."""
    name = relative_path.replace("/", "_")
    return posixpath.join(output, PARTS_DIR, name, f"part-{algorithms.stable_hash(part_key):016x}")


def write_part(
    output: str, relative_path: str, part_key, texts: Iterable[str], separator: str
) -> tuple:
    """Writes one part (the texts joined by `separator`); -> (part_key, its path)."""
    path = part_path(output, relative_path, part_key)
    write_file(path, separator.join(texts))
    return part_key, path


@beam.typehints.with_output_types(tuple[Any, str])
class _WritePartFn(beam.DoFn):
    def __init__(self, output, relative_path, separator):
        self._output = output
        self._relative_path = relative_path
        self._separator = separator
        self._parts = Metrics.counter(METRICS_NAMESPACE, "parts_written")

    def process(self, element):
        part_key, entries = element
        entries = sorted(entries, key=lambda entry: entry[0])
        self._parts.inc()
        yield write_part(
            self._output,
            self._relative_path,
            part_key,
            (text for _, text in entries),
            self._separator,
        )


def join_parts(
    output: str,
    relative_path: str,
    parts: Sequence[tuple],
    *,
    prefix: str = "",
    separator: str = "",
    suffix: str = "",
) -> str:
    """Copies the parts [(part_key, path)] in part-key order into `output/relative_path` (in
    chunks: constant memory), between `prefix` and `suffix` and with `separator` between parts;
    then deletes them. -> relative_path."""
    parts = sorted(parts, key=lambda part: part[0])
    with AtomicFile(posixpath.join(output, relative_path)) as out:
        out.write(prefix.encode("utf-8"))
        for k, (_, path) in enumerate(parts):
            if k:
                out.write(separator.encode("utf-8"))
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                while True:
                    chunk = f.read(_COPY_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
        out.write(suffix.encode("utf-8"))
    if parts:
        FileSystems.delete([path for _, path in parts])
    return relative_path


class JoinParts(beam.PTransform):
    """(part_key, part path) of every part -> the one file (see `join_parts`); -> its path."""

    def __init__(self, output: str, relative_path: str, *, prefix="", separator="", suffix=""):
        super().__init__()
        self._args = (output, relative_path)
        self._kwargs = dict(prefix=prefix, separator=separator, suffix=suffix)

    def expand(self, parts):
        args, kwargs = self._args, self._kwargs
        return (
            parts.pipeline
            | "Trigger" >> beam.Create([None])
            | "Join"
            >> beam.Map(
                lambda _, parts: join_parts(*args, parts, **kwargs), beam.pvalue.AsList(parts)
            )
        )


class WriteOrderedText(beam.PTransform):
    """(part_key, (sort_key, text)) -> one file: the texts ordered by (part_key, sort_key),
    written in parallel, one part per part_key, then joined. Returns the file's relative path.

    Lines: give texts ending in a line break and no separator. A JSON object: prefix "{",
    separator ", ", suffix "}" and texts that are its entries.
    """

    def __init__(self, output: str, relative_path: str, *, prefix="", separator="", suffix=""):
        super().__init__()
        self._output = output
        self._relative_path = relative_path
        self._format = dict(prefix=prefix, separator=separator, suffix=suffix)

    def expand(self, entries):
        parts = (
            entries
            | "GroupByPart" >> beam.GroupByKey()
            | "WriteParts"
            >> beam.ParDo(
                _WritePartFn(self._output, self._relative_path, self._format["separator"])
            )
        )
        return parts | "JoinParts" >> JoinParts(self._output, self._relative_path, **self._format)


def numbered_lines(pairs):
    """(index >= 1, line) -> (part key, (index, line + newline)) for `WriteOrderedText`."""
    return pairs | "ToParts" >> beam.Map(
        lambda pair: ((pair[0] - 1) // LINES_PER_PART, (pair[0], f"{pair[1]}\n"))
    )


class NumberLines(beam.PTransform):
    """A singleton N -> (k, str(k)) for k = 1..N, generated in parallel ranges (the vocab of
    kept raw ids)."""

    def expand(self, count):
        step = LINES_PER_PART
        return (
            count
            | "Ranges" >> beam.FlatMap(lambda n: range(0, n, step))
            | "Spread" >> beam.Reshuffle()
            | "Lines"
            >> beam.FlatMap(
                lambda lo, n: ((k, str(k)) for k in range(lo + 1, min(lo + step, n) + 1)),
                beam.pvalue.AsSingleton(count),
            )
        )


class WriteLines(beam.PTransform):
    """(index 1..N, line) -> `relative_path` with line k = the line of index k."""

    def __init__(self, output: str, relative_path: str):
        super().__init__()
        self._output = output
        self._relative_path = relative_path

    def expand(self, pairs):
        return numbered_lines(pairs) | "Write" >> WriteOrderedText(
            self._output, self._relative_path
        )


def remove_parts_dir(output: str) -> None:
    """Deletes what is left of `<output>/.parts` (empty directories on local file systems)."""
    path = posixpath.join(output, PARTS_DIR)
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # nothing but empty directories is left; never fail the job for it
        _LOG.warning("Could not remove %s: %s", path, e)


# ---------------------------------------------------------------------------------------------
# Dead letters.
# ---------------------------------------------------------------------------------------------
class _CountKindsFn(beam.CombineFn):
    """Dead letters -> {reason: count} (a small dict, whatever the number of letters)."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, letter):
        counts[letter["reason"]] = counts.get(letter["reason"], 0) + 1
        return counts

    def merge_accumulators(self, accumulators):
        merged: dict = {}
        for counts in accumulators:
            for kind, n in counts.items():
                merged[kind] = merged.get(kind, 0) + n
        return merged

    def extract_output(self, counts):
        return counts


def _dead_letter_entry(letter):
    key = algorithms.dead_letter_key(letter)
    part = (key[0], key[1] // LINES_PER_PART)
    return part, (key, algorithms.dead_letter_line(letter) + "\n")


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> the dead-letter file (JSON lines, sorted by file and line), written in
    parts of at most LINES_PER_PART lines of one file; returns {"counts": one dict {kind: count}
    holding every kind in `kinds` (zero if absent), "file": the written path}."""

    def __init__(self, output: str, kinds: Sequence[str]):
        super().__init__()
        self._output = output
        self._kinds = tuple(kinds)

    def expand(self, dead_letters):
        kinds = self._kinds
        written = (
            dead_letters
            | "ToParts" >> beam.Map(_dead_letter_entry)
            | "Write" >> WriteOrderedText(self._output, DEAD_LETTER_FILE)
        )
        counts = (
            dead_letters
            | "Count" >> beam.CombineGlobally(_CountKindsFn())
            | "AllKinds" >> beam.Map(algorithms.count_kinds, kinds)
        )
        return {"counts": counts, "file": written}


# ---------------------------------------------------------------------------------------------
# metadata.json.
# ---------------------------------------------------------------------------------------------
def metadata_json(
    config: dict,
    *,
    num_users,
    num_items,
    num_attributes,
    num_interactions,
    num_shards,
    written: dict,
    bad_records: dict,
    stats: dict,
    stat_names: Sequence[str],
) -> str:
    """metadata.json: every key of `schema.METADATA_KEYS`, plus shard counts and stats."""
    dupe_factor = config["dupe_factor"]
    per_duplicate = [written.get(schema.pretrain_prefix(k), 0) for k in range(dupe_factor)]
    if len(set(per_duplicate)) > 1:
        raise RuntimeError(f"Pretraining duplicates differ in size: {per_duplicate}")
    metadata = {
        "format_version": schema.FORMAT_VERSION,
        "num_users": num_users,
        "num_items": num_items,
        "num_attributes": num_attributes,
        "num_interactions": num_interactions,
        "num_pretrain_examples": per_duplicate[0],
        "dupe_factor": dupe_factor,
        "max_seq_length": config["max_seq_length"],
        "mask_id": num_items + 1,
        "num_negatives": config["num_negatives"],
        "num_bad_records": bad_records,
        "config": config,
        "input_format": config["input_format"],
        "num_shards": num_shards,
        "num_split_examples": {s: written.get(schema.split_prefix(s), 0) for s in schema.SPLITS},
        "stats": {name: stats.get(name, 0) for name in stat_names},
    }
    missing = set(schema.METADATA_KEYS) - set(metadata)
    if missing:
        raise RuntimeError(f"metadata.json lacks the schema's keys {sorted(missing)}")
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"
