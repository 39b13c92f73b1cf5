"""Step 6 of the job: the item -> attribute ids table and the attribute vocabulary, keyed by item
and by attribute name."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines import writers
from beam_pipelines.ids import DenseRank, max_or_zero


def _join_item_ids(element):
    """(raw item, {ids: [id], attributes: [names, ...]}) -> (item id, merged names)."""
    _, joined = element
    attributes = list(joined["attributes"])
    if attributes:
        for item_id in joined["ids"]:
            yield item_id, tuple(sorted(set().union(*attributes)))


def _attribute_of_item(element):
    _, joined = element
    for attribute_id in joined["id"]:
        for item_id in joined["items"]:
            yield item_id, attribute_id


class BuildItemAttributes(beam.PTransform):
    """{attributes: (raw item, attribute names), item_ids: (raw, id)} -> {table: (item id,
    sorted attribute ids), attribute_vocab: (id, name), num_attributes: one int}.

    Attributes of items that are not in the data are dropped; several metadata records of one
    item are merged. An attribute is kept when at least `min_count` items carry it; kept names
    are numbered in sorted order (`DenseRank`), or keep their ids with `keep_raw_ids`. Items
    without metadata have no entry; items whose attributes were all dropped an empty list.
    """

    def __init__(self, min_count: int, keep_raw_ids: bool):
        super().__init__()
        self._min_count = min_count
        self._keep = keep_raw_ids

    def expand(self, inputs):
        min_count = self._min_count
        items = (
            {"ids": inputs["item_ids"], "attributes": inputs["attributes"]}
            | "JoinItemIds" >> beam.CoGroupByKey()
            | "KnownItems" >> beam.FlatMap(_join_item_ids)
        )
        kept = (
            items
            | "Names" >> beam.FlatMap(lambda item: [(name, 1) for name in item[1]])
            | "CountItems" >> beam.CombinePerKey(sum)
            | "Frequent" >> beam.Filter(lambda pair: pair[1] >= min_count)
            | "KeptNames" >> beam.Keys()
        )
        if self._keep:
            num_attributes = kept | "MaxAttribute" >> beam.CombineGlobally(max_or_zero)
            name_ids = kept | "SameIds" >> beam.Map(lambda name: (name, name))
            vocab = num_attributes | "Vocab" >> writers.NumberLines()
        else:
            ranked = kept | "RankNames" >> DenseRank()
            num_attributes, name_ids = ranked["count"], ranked["ranks"]
            vocab = name_ids | "Vocab" >> beam.MapTuple(lambda name, k: (k, str(name)))
        attribute_ids = (
            {
                "items": items
                | "NameItems" >> beam.FlatMap(lambda item: [(name, item[0]) for name in item[1]]),
                "id": name_ids,
            }
            | "JoinNameIds" >> beam.CoGroupByKey()
            | "ItemAttributeIds" >> beam.FlatMap(_attribute_of_item)
        )
        table = (
            (attribute_ids, items | "EveryItem" >> beam.MapTuple(lambda item, _: (item, None)))
            | "FlattenTable" >> beam.Flatten()
            | "GroupTable" >> beam.GroupByKey()
            | "Entry"
            >> beam.MapTuple(lambda item, ids: (item, sorted(k for k in ids if k is not None)))
        )
        return {"table": table, "attribute_vocab": vocab, "num_attributes": num_attributes}
