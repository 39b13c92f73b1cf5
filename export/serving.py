"""The serving model: raw item ids in, the top-k raw item ids out, as a `tf.Module` with signatures.

`S3RecServingModule` wraps a trained `S3RecEncoder` (the query tower) and a
`tfrs.layers.factorized_top_k` index over the item embeddings of items 1..N (never the padding id
0 or the mask id N + 1), together with the item vocabulary and the items' training popularity.
Saved with `save_serving_module`, it is a plain SavedModel: any Python process with TensorFlow (no
project code, no TensorFlow Recommenders) or TensorFlow Serving can run it. A ScaNN index needs the
ScaNN custom ops registered first (`import scann` in Python, or a ScaNN build of Serving).

Signatures (`k` is fixed at export time):
  serving_default(history: tf.string [batch, None])
      -> {"item_ids": tf.string [batch, k], "scores": tf.float32 [batch, k]}
  user_embedding(history: tf.string [batch, None])
      -> {"embedding": tf.float32 [batch, hidden]}

`history` holds raw item ids, oldest first, right-padded with "". Every request gets a defined
answer:
  * ids not in the vocabulary (and the padding "") are dropped, never an error;
  * only the last `max_seq_length` known items feed the encoder (the encoder's window);
  * with `exclude_history` (the default) every known item of the request, the whole history and not
    only the encoder's window, is left out of the recommendations. The index is asked for k + (the
    batch's longest known history) candidates, so with BruteForce the result is exactly the top-k of
    the items outside the history. Only when fewer than k items exist outside a history (a tiny
    catalogue) are the remaining places filled with history items, best first;
  * with ScaNN the candidates themselves are approximate, and the index returns at most its
    `num_reordering_candidates` of them (>= k + max_seq_length): a history longer than that minus
    k may leave fewer than k new candidates, and history items fill the rest;
  * a row with no known item (empty or all unknown) gets the k most popular training items (most
    interactions first, ties by the lower item id) with their training interaction counts as
    `scores`, and an all-zero `embedding`;
  * a request of another dtype or rank is refused by the signature itself.
The returned ids are always real items: never "", the padding id or the mask id.
"""

import logging
from collections.abc import Mapping
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from s3rec_tf.padding import left_pad_ragged

logger = logging.getLogger(__name__)

INDEX_TYPES = ("brute_force", "scann")

HISTORY_SPEC = tf.TensorSpec([None, None], tf.string, name="history")

# Serving signature names and their tensor keys: the contract with clients.
SERVING_SIGNATURE = "serving_default"
EMBEDDING_SIGNATURE = "user_embedding"
HISTORY_KEY = "history"
ITEM_IDS_KEY = "item_ids"
SCORES_KEY = "scores"
EMBEDDING_KEY = "embedding"

# Rows encoded together (see S3RecServingModule._user_embedding): small enough that the rows of a
# chunk have similar lengths, large enough that the encoder's per-call overhead stays small.
ENCODER_CHUNK_ROWS = 32

# Custom-op namespace of ScaNN's TensorFlow ops; SavedModels refuse unknown namespaces by default.
SCANN_NAMESPACE = "Scann"


def scann_available() -> bool:
    """Whether ScaNN's TensorFlow ops can be imported (the optional `scann` extra)."""
    try:
        from scann import scann_ops  # noqa: F401
    except ImportError:
        return False
    return True


def default_scann_options(num_items: int, k: int, max_seq_length: int) -> dict:
    """ScaNN parameters for a catalogue of `num_items` items.

    About sqrt(N) partitions of which 40% are searched, asymmetric-hashing scores, then an exact
    re-scoring of the best 500 candidates. With the released S3-Rec Beauty model (12,101 x 64) and
    real user histories this keeps recall@10 against brute force near 0.99 (a fifth of the
    partitions: 0.95). The re-scored pool must also hold every candidate that the history
    exclusion asks for (k + max_seq_length), or ScaNN would return fewer columns.
    """
    num_leaves = max(1, min(num_items, int(round(np.sqrt(num_items)))))
    return {
        "num_leaves": num_leaves,
        "num_leaves_to_search": max(1, int(np.ceil(0.4 * num_leaves))),
        "num_reordering_candidates": max(500, k + max_seq_length),
        "dimensions_per_block": 2,
        "training_iterations": 12,
    }


class S3RecServingModule(tf.Module):
    """Query tower, item vocabulary, popularity and a top-k index, with the serving signatures.

    Args:
      encoder: a built, trained `S3RecEncoder`; its table `item_embeddings` `[N + 2, hidden]`.
      vocab_file: the item vocabulary, line k (1-based) = raw id of item k, N lines. It becomes a
        SavedModel asset (copied into `assets/`).
      item_popularity: int `[N + 1]` or `[N + 2]`: training interaction counts of item ids 0..N
        (a trailing mask-id count is ignored).
      k: number of recommendations per request.
      index: "brute_force" (exact, `tfrs.layers.factorized_top_k.BruteForce`) or "scann"
        (approximate, `tfrs.layers.factorized_top_k.ScaNN`; needs the `scann` package).
      exclude_history: leave the items of the request's history out of the recommendations.
      scann_options: overrides of `default_scann_options` (keyword arguments of the TFRS ScaNN
        layer).
    """

    def __init__(
        self,
        encoder: tf.keras.layers.Layer,
        vocab_file: str,
        item_popularity: np.ndarray,
        k: int = 10,
        index: str = "brute_force",
        exclude_history: bool = True,
        scann_options: Optional[Mapping] = None,
        name: str = "s3rec_serving",
    ):
        super().__init__(name=name)
        if not encoder.built:
            raise ValueError(
                "S3RecServingModule needs a built encoder (restore its weights first)."
            )
        num_items = int(encoder.num_items)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_items:
            raise ValueError(
                f"k must be an integer in 1..{num_items} (the number of items), got {k!r}."
            )
        if index not in INDEX_TYPES:
            raise ValueError(f"index must be one of {INDEX_TYPES}, got {index!r}.")
        popularity = np.asarray(item_popularity)
        if popularity.ndim != 1 or popularity.shape[0] not in (num_items + 1, num_items + 2):
            raise ValueError(
                f"item_popularity must have shape [{num_items + 1}] (ids 0..N) or "
                f"[{num_items + 2}] (with the mask id), got {popularity.shape}."
            )
        if not np.issubdtype(popularity.dtype, np.integer) or (popularity < 0).any():
            raise ValueError("item_popularity must hold non-negative integer counts.")
        popularity = popularity[: num_items + 1].astype(np.int64)

        self.encoder = encoder
        self.k = int(k)
        self.num_items = num_items
        self.max_seq_length = int(encoder.max_seq_length)
        self.hidden_size = int(encoder.hidden_size)
        self.exclude_history = bool(exclude_history)
        self.index_type = index

        # Line numbers are 0-based; item id = line + 1, so the table's -1 for an unknown id maps to
        # the padding id 0, which the model treats as "no item".
        self.item_id_table = _vocabulary_table(vocab_file, num_items, "item_id_table")
        self.raw_id_table = _vocabulary_table(vocab_file, num_items, "raw_id_table")
        self.item_popularity = tf.Variable(popularity, trainable=False, name="item_popularity")
        # Stable sort: equal counts keep the lower item id first, the same answer on every export.
        popular = np.argsort(-popularity[1:], kind="stable")[: self.k] + 1
        self.popular_item_ids = tf.Variable(popular, trainable=False, name="popular_item_ids")

        item_ids = tf.range(1, num_items + 1, dtype=tf.int64)
        candidates = tf.gather(encoder.item_table(), item_ids)  # [N, hidden], no pad / mask rows
        if index == "scann":
            if not scann_available():
                raise ImportError(
                    "index='scann' needs ScaNN's TensorFlow ops: pip install 's3rec-tf[scann]' "
                    "(scann[tf]==1.4.2), or export with index='brute_force'."
                )
            options = default_scann_options(num_items, self.k, self.max_seq_length)
            options.update(scann_options or {})
            if options["num_reordering_candidates"] < self.k + self.max_seq_length:
                # ScaNN returns at most this many neighbours; the history exclusion needs
                # k + max_seq_length of them.
                raise ValueError(
                    "ScaNN num_reordering_candidates must be at least k + max_seq_length = "
                    f"{self.k + self.max_seq_length}, got {options['num_reordering_candidates']}."
                )
            self.index_options = tuple(sorted(options.items()))
            logger.info("Building a ScaNN index over %d items: %s", num_items, options)
            self.index = tfrs.layers.factorized_top_k.ScaNN(
                k=self.k, distance_measure="dot_product", **options, name="scann_index"
            )
        else:
            if scann_options:
                raise ValueError("scann_options apply to index='scann' only.")
            self.index_options = ()
            self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.k, name="brute_force_index")
        self.index.index(candidates, item_ids)

    # ------------------------------------------------------------------------------------------
    # Signatures
    # ------------------------------------------------------------------------------------------

    @tf.function(input_signature=[HISTORY_SPEC])
    def recommend(self, history):
        """`history` `[batch, None]` raw ids -> item_ids `[batch, k]` (str), scores `[batch, k]`."""
        ids = self._item_ids(history)
        query, has_history = self._user_embedding(ids)
        scores, items = self._top_k(query, ids)

        popular_scores = tf.cast(tf.gather(self.item_popularity, self.popular_item_ids), tf.float32)
        batch = tf.shape(history)[0]
        keep = has_history[:, tf.newaxis]
        items = tf.where(keep, items, tf.tile(self.popular_item_ids[tf.newaxis], [batch, 1]))
        scores = tf.where(keep, scores, tf.tile(popular_scores[tf.newaxis], [batch, 1]))
        raw_ids = self.raw_id_table.lookup(items - 1)
        return {
            ITEM_IDS_KEY: tf.ensure_shape(raw_ids, [None, self.k]),
            SCORES_KEY: tf.ensure_shape(scores, [None, self.k]),
        }

    @tf.function(input_signature=[HISTORY_SPEC])
    def embed(self, history):
        """`history` `[batch, None]` raw ids -> embedding `[batch, hidden]` (0: no known item)."""
        embedding, _ = self._user_embedding(self._item_ids(history))
        return {EMBEDDING_KEY: tf.ensure_shape(embedding, [None, self.hidden_size])}

    def signatures(self) -> dict:
        return {
            SERVING_SIGNATURE: self.recommend.get_concrete_function(),
            EMBEDDING_SIGNATURE: self.embed.get_concrete_function(),
        }

    # ------------------------------------------------------------------------------------------
    # Steps
    # ------------------------------------------------------------------------------------------

    def _item_ids(self, history):
        """Raw ids `[batch, T]` -> item ids `[batch, T]` int64; 0 for "" and unknown ids."""
        # Loaded signatures check the dtype of a request but not its rank, and TensorFlow Serving
        # feeds whatever shape the JSON has: EnsureShape refuses anything but a matrix at run time.
        history = tf.ensure_shape(history, [None, None], name="check_history_is_a_matrix")
        return self.item_id_table.lookup(history) + 1

    def _user_embedding(self, ids):
        """Item ids `[batch, T]` (0 anywhere) -> embedding `[batch, hidden]`, has_history `[batch]`.

        The embedding is the causal encoder's output at the last item of the row's known items
        (in order, the last max_seq_length of them); zeros for a row without any.

        The encoder's cost grows with the padded width, and one long history would make a whole
        batch that wide. So the rows are sorted by length and encoded in chunks of
        ENCODER_CHUNK_ROWS, each left-padded only to its own longest row: the encoder's padding
        contract makes the outputs the same as for any other padding.
        """
        known = tf.ragged.boolean_mask(ids, ids > 0)[:, -self.max_seq_length :]
        lengths = known.row_lengths()
        order = tf.argsort(lengths, stable=True)
        by_length = tf.gather(known, order)
        rows = tf.shape(lengths)[0]
        # At least one chunk, so that an empty batch still yields a [0, hidden] result.
        num_chunks = tf.maximum((rows + ENCODER_CHUNK_ROWS - 1) // ENCODER_CHUNK_ROWS, 1)

        def encode_chunk(chunk, outputs):
            part = by_length[chunk * ENCODER_CHUNK_ROWS : (chunk + 1) * ENCODER_CHUNK_ROWS]
            # The user embedding is the last position's output: the final block skips the rest.
            last = self.encoder(
                left_pad_ragged(part), causal=True, training=False, last_position_only=True
            )
            return chunk + 1, outputs.write(chunk, last)

        _, outputs = tf.while_loop(
            lambda chunk, _: chunk < num_chunks,
            encode_chunk,
            (
                tf.constant(0),
                tf.TensorArray(
                    tf.float32,
                    size=num_chunks,
                    infer_shape=False,
                    element_shape=[None, self.hidden_size],
                ),
            ),
        )
        embedding = tf.gather(outputs.concat(), tf.math.invert_permutation(order))
        has_history = lengths > 0
        return (
            tf.where(has_history[:, tf.newaxis], embedding, tf.zeros_like(embedding)),
            has_history,
        )

    def _top_k(self, query, ids):
        """Queries `[batch, hidden]`, history ids `[batch, T]` -> scores, item ids `[batch, k]`."""
        if not self.exclude_history:
            return self.index(query, k=self.k)

        # A row drops at most as many candidates as it has known history items, so k + the
        # batch's longest known history candidates always leave the exact top-k outside it.
        longest = tf.reduce_max(tf.math.count_nonzero(ids, axis=1, dtype=tf.int32))
        num_candidates = tf.minimum(self.num_items, self.k + tf.maximum(longest, 0))
        scores, candidates = self.index(query, k=num_candidates)

        # Membership of each candidate in its row's history, by binary search in the sorted ids
        # (a leading 0 column keeps the search valid for an empty history; 0 is never a candidate).
        padding = tf.zeros(tf.stack([tf.shape(ids)[0], 1]), ids.dtype)
        seen = tf.sort(tf.concat([padding, ids], axis=1), axis=1)
        position = tf.searchsorted(seen, candidates, side="left")
        position = tf.minimum(position, tf.shape(seen)[1] - 1)
        in_history = tf.equal(tf.gather(seen, position, batch_dims=1), candidates)

        # The index returns candidates best first and top_k keeps the lower position among equal
        # values, so the history fillers (all -inf) stay in score order.
        ranked = tf.where(in_history, tf.constant(-np.inf, scores.dtype), scores)
        _, order = tf.math.top_k(ranked, k=self.k)
        return tf.gather(scores, order, batch_dims=1), tf.gather(candidates, order, batch_dims=1)


def _vocabulary_table(vocab_file: str, num_items: int, name: str) -> tf.lookup.StaticHashTable:
    """ "item_id_table": raw id -> line number (-1 if unknown); "raw_id_table": the reverse ("")."""
    raw = (tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
    line = (tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
    (key_dtype, key_index), (value_dtype, value_index) = (
        (raw, line) if name == "item_id_table" else (line, raw)
    )
    initializer = tf.lookup.TextFileInitializer(
        vocab_file, key_dtype, key_index, value_dtype, value_index, vocab_size=num_items
    )
    default = -1 if name == "item_id_table" else ""
    return tf.lookup.StaticHashTable(initializer, default_value=default, name=name)


def save_serving_module(module: S3RecServingModule, output_dir: str) -> None:
    """Writes `module` as a SavedModel with its two signatures (ScaNN's op namespace allowed)."""
    options = tf.saved_model.SaveOptions(
        namespace_whitelist=[SCANN_NAMESPACE] if module.index_type == "scann" else None
    )
    tf.saved_model.save(module, output_dir, signatures=module.signatures(), options=options)
