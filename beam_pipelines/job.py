"""The preprocessing job as one composite PTransform: input files -> everything under --output.

    Parse* -> FilterRatings -> BuildHistories | S3RecHistories -> KCore -> AssignIds
      -> BuildItemAttributes, NegativeSegments -> WriteExamples
      -> sequences.txt, vocab files, item2attributes.json, dead letters (parts, joined in order)
      -> metadata.json (last: a reader that finds it finds complete data beside it)

The steps are in `beam_pipelines.steps`, the writers in `beam_pipelines.writers`.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam

from beam_pipelines import algorithms, parse, steps, writers
from beam_pipelines.config import PreprocessConfig

# The data contract (output file names); see the note in `beam_pipelines.writers` on why it
# loads TensorFlow.
from s3rec_tf import schema

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

STATS = steps.STATS


def _input_kinds(config: PreprocessConfig):
    if config.resolved_format == "s3rec":
        return parse.ALL_S3REC_KINDS
    if config.resolved_format == "amazon2023":
        return parse.AMAZON_2023_KINDS
    return parse.AMAZON_KINDS


def _entries(table):
    return table | "Item2AttributesEntries" >> beam.MapTuple(
        lambda item, ids: (
            (item - 1) // writers.LINES_PER_PART,
            (item, algorithms.item2attributes_entry(item, ids)),
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
        dead_letters, stats = [], []
        if c.resolved_format == "s3rec":
            lines = pbegin | "ParseSequences" >> steps.ParseS3RecSequences(c.sequences)
            table = pbegin | "ParseItemAttributes" >> steps.ParseS3RecItemAttributes(
                c.item2attributes
            )
            built = lines["lines"] | "S3RecHistories" >> steps.S3RecHistories()
            dead_letters += [lines["dead_letters"], table["dead_letters"], built["dead_letters"]]
            raw_attributes = table["attributes"]
        else:
            layout = parse.AUTO if c.input_format == "auto" else c.input_format
            reviews = pbegin | "ParseReviews" >> steps.ParseReviews(c.reviews, layout)
            meta = pbegin | "ParseMetadata" >> steps.ParseMetadata(c.metadata, layout)
            rated = reviews["events"] | "FilterRatings" >> steps.FilterRatings(c.min_rating)
            built = rated["events"] | "BuildHistories" >> steps.BuildHistories()
            dead_letters += [reviews["dead_letters"], meta["dead_letters"]]
            stats += [rated["stats"], built["stats"]]
            raw_attributes = meta["attributes"]

        core = built["histories"] | "KCore" >> steps.KCore(
            c.user_core, c.item_core, c.kcore_max_rounds
        )
        stats.append(core["stats"])
        ids = core["histories"] | "AssignIds" >> steps.AssignIds(c.keep_raw_ids)
        attributes = {
            "attributes": raw_attributes,
            "item_ids": ids["item_ids"],
        } | "ItemAttributes" >> steps.BuildItemAttributes(c.attribute_min_count, c.keep_raw_ids)

        num_users_written = ids["histories"] | "CountUsers" >> beam.combiners.Count.Globally()
        num_shards = num_users_written | "NumShards" >> beam.Map(
            lambda users, fixed, per_shard: fixed or algorithms.auto_num_shards(users, per_shard),
            c.num_shards,
            c.users_per_shard,
        )
        segments = ids["histories"] | "NegativeSegments" >> steps.NegativeSegments(
            out,
            schema.SEQUENCES_FILE,
            num_shards=num_shards,
            dupe_factor=c.dupe_factor,
            max_seq_length=c.max_seq_length,
            seed=c.seed,
        )
        written = {
            "histories": ids["histories"],
            "segments": segments["segments"],
        } | "WriteExamples" >> steps.WriteExamples(
            out,
            num_items=ids["num_items"],
            num_shards=num_shards,
            num_interactions=segments["num_interactions"],
            dupe_factor=c.dupe_factor,
            max_seq_length=c.max_seq_length,
            mask_prob=c.mask_prob,
            num_negatives=c.num_negatives,
            seed=c.seed,
        )
        files = [
            segments["sequence_parts"]
            | "JoinSequences" >> writers.JoinParts(out, schema.SEQUENCES_FILE),
            ids["item_vocab"] | "WriteItemVocab" >> writers.WriteLines(out, schema.ITEM_VOCAB),
            ids["user_vocab"] | "WriteUserVocab" >> writers.WriteLines(out, schema.USER_VOCAB),
            attributes["attribute_vocab"]
            | "WriteAttributeVocab" >> writers.WriteLines(out, schema.ATTRIBUTE_VOCAB),
            _entries(attributes["table"])
            | "WriteItem2Attributes"
            >> writers.WriteOrderedText(
                out, schema.ITEM2ATTRIBUTES_FILE, prefix="{", separator=", ", suffix="}"
            ),
        ]
        bad = (
            dead_letters
            | "FlattenDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> writers.WriteDeadLetters(out, _input_kinds(c))
        )
        files.append(bad["file"])
        all_stats = stats | "FlattenStats" >> beam.Flatten() | "SumStats" >> beam.CombinePerKey(sum)
        sizes = [
            ids["num_items"] | "NumItemsSize" >> beam.Map(lambda n: ("num_items", n)),
            ids["num_users"] | "NumUsersSize" >> beam.Map(lambda n: ("num_users", n)),
            attributes["num_attributes"]
            | "NumAttributesSize" >> beam.Map(lambda n: ("num_attributes", n)),
            segments["num_interactions"]
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
