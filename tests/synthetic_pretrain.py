"""Small structured pretraining data for model tests (the Beam job makes the real examples).

Users walk through the catalogue in order (item s, s+1, s+2, ... modulo the number of items), and
item i has attributes derived from i, so every objective has something to learn: masked items
follow from their neighbours, attributes from items, and a true segment from its context.
Examples are built the way the S3-Rec reference builds them (mask rate 0.2 for items, one masked
segment per sequence, negatives drawn from other items / another sequence).
"""

import numpy as np

from s3rec_tf import schema


def item_attributes(num_items, num_attributes):
    """{item: [attributes]}: two attributes per item, a function of the item id."""
    return {
        item: sorted({item % num_attributes + 1, (item // num_attributes) % num_attributes + 1})
        for item in range(1, num_items + 1)
    }


def make_examples(num_examples, num_items, max_length, seed, mask_rate=0.2):
    """Unpadded pretraining examples: a list of dicts of six equal-length int lists."""
    rng = np.random.default_rng(seed)
    mask_id = num_items + 1
    sequences = [
        (rng.integers(0, num_items) + np.arange(rng.integers(2, max_length + 1))) % num_items + 1
        for _ in range(num_examples)
    ]
    examples = []
    for index, items in enumerate(sequences):
        length = len(items)
        masked = rng.random(length) < mask_rate
        negatives = rng.integers(1, num_items + 1, length)
        start = int(rng.integers(0, length - 1))
        end = int(rng.integers(start + 1, length))  # a segment that leaves context around it
        other = sequences[(index + 1 + int(rng.integers(0, num_examples - 1))) % num_examples]
        other_start = int(rng.integers(0, max(1, len(other) - (end - start))))
        neg_segment = np.resize(other[other_start:], end - start)
        example = {
            schema.MASKED_ITEM_SEQUENCE: np.where(masked, mask_id, items),
            schema.POS_ITEMS: items,
            schema.NEG_ITEMS: np.where(masked, negatives, items),
            schema.MASKED_SEGMENT_SEQUENCE: np.concatenate(
                [items[:start], np.full(end - start, mask_id), items[end:]]
            ),
            schema.POS_SEGMENT: np.concatenate(
                [np.full(start, mask_id), items[start:end], np.full(length - end, mask_id)]
            ),
            schema.NEG_SEGMENT: np.concatenate(
                [np.full(start, mask_id), neg_segment, np.full(length - end, mask_id)]
            ),
        }
        examples.append({key: np.asarray(value, np.int64) for key, value in example.items()})
    return examples


def pad_batch(examples, width=None):
    """Left-pads a list of examples to `width` (default: their longest) -> dict of [B, W] arrays."""
    width = width or max(len(e[schema.POS_ITEMS]) for e in examples)
    batch = {}
    for key in schema.PRETRAIN_SEQUENCES:
        rows = np.zeros([len(examples), width], np.int64)
        for row, example in enumerate(examples):
            values = example[key]
            rows[row, width - len(values) :] = values
        batch[key] = rows
    return batch
