"""The preprocessing job as one composite PTransform: input files -> everything under --output.

    the format's reader (`formats`: Parse*, FilterRatings, BuildHistories | S3RecHistories)
      -> KCore -> AssignIds
      -> BuildItemAttributes, NegativeSegments -> WriteExamples
      -> sequences.txt, vocab files, item2attributes.json, dead letters (parts, joined in order)
      -> metadata.json (last: a reader that finds it finds complete data beside it)

One module per step: `reading` (parse), `filtering`, `histories`, `kcore`, `ids`, `attributes`,
`segments`, `examples` (TFRecords); the text files are written by `beam_pipelines.writers`.

Scaling: no step brings the data set to one worker. Work is keyed by user, item, attribute,
range bucket, block of user ids or block of long-sequence positions; the only side inputs are
small (counts, sums per bucket or block, bucket boundaries from a fixed-size sample).

Determinism: random choices are made per (user, duplicate) (`pretrain_examples`), ids are exact
ranks, and every file is written by one DoFn call that orders its own contents, so the bytes
written do not depend on the runner, the number of workers or the order of elements.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam

from beam_pipelines import algorithms, attributes, examples, ids, kcore, segments, writers
from beam_pipelines.config import PreprocessConfig
from beam_pipelines.stats import STATS
from s3rec_tf import schema  # the data contract: output file names

# Everything the job writes, relative to --output (for removing an earlier run's outputs).
JOB_FILES = (
    schema.METADATA_FILE,  # first: without it the directory does not claim to be complete
    schema.SEQUENCES_FILE,
    schema.ITEM2ATTRIBUTES_FILE,
    schema.ITEM_VOCAB,
    schema.USER_VOCAB,
    schema.ATTRIBUTE_VOCAB,
    schema.DEAD_LETTER_PREFIX + "-*",
    posixpath.join(schema.PRETRAIN_DIR, "dupe-*", "part-*" + schema.TFRECORD_SUFFIX),
    *(schema.split_prefix(s) + "-*" + schema.TFRECORD_SUFFIX for s in schema.SPLITS),
    # Temporary files and parts a failed run may have left.
    writers.TEMP_PREFIX + "*",
    posixpath.join("*", writers.TEMP_PREFIX + "*"),
    posixpath.join(schema.PRETRAIN_DIR, "dupe-*", writers.TEMP_PREFIX + "*"),
    posixpath.join(writers.PARTS_DIR, "*", "*"),
)


def _entries(table):
    return table | "Item2AttributesEntries" >> beam.MapTuple(
        lambda item, attribute_ids: (
            (item - 1) // writers.LINES_PER_PART,
            (item, algorithms.item2attributes_entry(item, attribute_ids)),
        )
    )


class Preprocess(beam.PTransform):
    """The whole job: input files -> everything under `config.output` (see the README)."""

    def __init__(self, config: PreprocessConfig):
        super().__init__()
        self._config = config.validate()

    def expand(self, pbegin):
        c = self._config
        out = c.output
        read = c.format.read(pbegin, c)
        core = read["histories"] | "KCore" >> kcore.KCore(
            c.user_core, c.item_core, c.kcore_max_rounds
        )
        numbered = core["histories"] | "AssignIds" >> ids.AssignIds(c.keep_raw_ids)
        item_attributes = {
            "attributes": read["attributes"],
            "item_ids": numbered["item_ids"],
        } | "ItemAttributes" >> attributes.BuildItemAttributes(
            c.attribute_min_count, c.keep_raw_ids
        )

        num_users_written = numbered["histories"] | "CountUsers" >> beam.combiners.Count.Globally()
        num_shards = num_users_written | "NumShards" >> beam.Map(
            lambda users, fixed, per_shard: fixed or algorithms.auto_num_shards(users, per_shard),
            c.num_shards,
            c.users_per_shard,
        )
        looked_up = numbered["histories"] | "NegativeSegments" >> segments.NegativeSegments(
            out,
            schema.SEQUENCES_FILE,
            num_shards=num_shards,
            dupe_factor=c.dupe_factor,
            max_seq_length=c.max_seq_length,
            seed=c.seed,
        )
        written = {
            "histories": numbered["histories"],
            "segments": looked_up["segments"],
        } | "WriteExamples" >> examples.WriteExamples(
            out,
            num_items=numbered["num_items"],
            num_shards=num_shards,
            num_interactions=looked_up["num_interactions"],
            dupe_factor=c.dupe_factor,
            max_seq_length=c.max_seq_length,
            mask_prob=c.mask_prob,
            num_negatives=c.num_negatives,
            seed=c.seed,
        )
        files = [
            looked_up["sequence_parts"]
            | "JoinSequences" >> writers.JoinParts(out, schema.SEQUENCES_FILE),
            numbered["item_vocab"] | "WriteItemVocab" >> writers.WriteLines(out, schema.ITEM_VOCAB),
            numbered["user_vocab"] | "WriteUserVocab" >> writers.WriteLines(out, schema.USER_VOCAB),
            item_attributes["attribute_vocab"]
            | "WriteAttributeVocab" >> writers.WriteLines(out, schema.ATTRIBUTE_VOCAB),
            _entries(item_attributes["table"])
            | "WriteItem2Attributes"
            >> writers.WriteOrderedText(
                out, schema.ITEM2ATTRIBUTES_FILE, prefix="{", separator=", ", suffix="}"
            ),
        ]
        bad = (
            read["dead_letters"]
            | "FlattenDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> writers.WriteDeadLetters(out, c.format.kinds)
        )
        files.append(bad["file"])
        all_stats = (
            [*read["stats"], core["stats"]]
            | "FlattenStats" >> beam.Flatten()
            | "SumStats" >> beam.CombinePerKey(sum)
        )
        sizes = [
            numbered["num_items"] | "NumItemsSize" >> beam.Map(lambda n: ("num_items", n)),
            numbered["num_users"] | "NumUsersSize" >> beam.Map(lambda n: ("num_users", n)),
            item_attributes["num_attributes"]
            | "NumAttributesSize" >> beam.Map(lambda n: ("num_attributes", n)),
            looked_up["num_interactions"]
            | "NumInteractionsSize" >> beam.Map(lambda n: ("num_interactions", n)),
            num_shards | "NumShardsSize" >> beam.Map(lambda n: ("num_shards", n)),
        ] | "FlattenSizes" >> beam.Flatten()

        config = c.to_dict()

        def metadata(_, sizes, written, bad_records, stats, _files):
            writers.remove_parts_dir(out)
            writers.write_file(
                posixpath.join(out, schema.METADATA_FILE),
                writers.metadata_json(
                    config,
                    **sizes,
                    written=written,
                    bad_records=bad_records,
                    stats=stats,
                    stat_names=STATS,
                ),
            )
            return schema.METADATA_FILE

        # Written last (its side inputs include every other output), so that a reader that finds
        # metadata.json finds complete data beside it.
        return (
            pbegin
            | "MetadataTrigger" >> beam.Create([None])
            | "Metadata"
            >> beam.Map(
                metadata,
                beam.pvalue.AsDict(sizes),
                beam.pvalue.AsDict(written),
                beam.pvalue.AsSingleton(bad["counts"]),
                beam.pvalue.AsDict(all_stats),
                beam.pvalue.AsList(files | "FlattenFiles" >> beam.Flatten()),
            )
        )
