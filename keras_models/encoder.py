"""The S3-Rec sequence encoder (the backbone shared by pretraining and fine-tuning).

Item embeddings + right-aligned learned position embeddings -> LayerNorm -> dropout -> a stack of
post-LN Transformer blocks (self-attention, then a GELU feed-forward of 4 x hidden), exactly the
function of the original S3-Rec implementation (RUCAIBox/CIKM2020-S3Rec), so its weights load
into these layers (see `s3rec_tf.reference`).

Padding contract: item ids are LEFT-padded with 0 to the batch's own width W <= max_seq_length, and
column j gets position id `max_seq_length - W + j`. The last item therefore always has position
`max_seq_length - 1`, as with the reference's left padding to a fixed length, so a batch padded to
its own longest sequence computes the same outputs at real positions as one padded to
max_seq_length.
"""

import math

import tensorflow as tf

ATTENTION_IMPLEMENTATIONS = ("matmul", "keras")


def _normal(stddev: float) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


class _TableNormal(tf.keras.initializers.Initializer):
    """N(0, stddev) for a table that grows with the catalogue, drawn inside one tf.function.

    Drawn eagerly, as Keras's RandomNormal draws it, `N(0, 1) * stddev + mean` holds three tables'
    worth of tensors at once, and TensorFlow's CPU allocator (oneDNN's pool) keeps that memory for
    the rest of the process: three item tables, 0.75 GB at a million items. In a graph the scaling
    reuses the draw's buffer. The seed of the stateless draw comes from the global generator, so
    `tf.keras.utils.set_random_seed` fixes it and two tables in one process still differ.
    """

    def __init__(self, stddev: float):
        self.stddev = stddev

    def __call__(self, shape, dtype=None, **kwargs):
        dtype = tf.as_dtype(dtype or tf.keras.backend.floatx())
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        draw = tf.function(
            lambda seed: tf.random.stateless_normal(shape, seed, stddev=self.stddev, dtype=dtype),
            autograph=False,
        )
        return draw(seed)

    def get_config(self) -> dict:
        return {"stddev": self.stddev}


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class TransformerBlock(tf.keras.layers.Layer):
    """One post-LN Transformer block of the S3-Rec encoder.

    x -> LayerNorm(x + Dropout(MultiHeadAttention(x, x))) = a
      -> LayerNorm(a + Dropout(Dense_d(GELU(Dense_4d(a)))))

    Call arguments:
      inputs: `[batch, W, hidden]` float.
      attention_mask: bool, `[batch, W, W]` or `[batch, 1, W]` (broadcast over queries); True where
        a query may attend to a key.
      training: enables both dropouts.
      last_position_only: compute the output of the last position only.

    attention_implementation: "matmul" (default) computes the attention with 2-D and batched
    matmuls on the `attention` sublayer's own weights; "keras" calls tf-keras'
    `MultiHeadAttention`. Same weights, same function, same dropout draws (the probabilities are
    dropped by the sublayer's own Dropout at the same shape); on this model's small shapes the
    einsums of the Keras layer and their gradients cost about twice the matmuls on CPU.

    Returns: `[batch, W, hidden]`, or `[batch, 1, hidden]` if last_position_only.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        initializer_range: float = 0.02,
        layer_norm_epsilon: float = 1e-12,
        attention_implementation: str = "matmul",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"TransformerBlock: attention_implementation must be one of "
                f"{ATTENTION_IMPLEMENTATIONS}, got {attention_implementation!r}."
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"TransformerBlock: hidden_size ({hidden_size}) must be divisible by num_heads "
                f"({num_heads})."
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_implementation = attention_implementation

        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_size // num_heads,
            dropout=attention_dropout,
            kernel_initializer=_normal(initializer_range),
            name="attention",
        )
        self.attention_output_dropout = tf.keras.layers.Dropout(dropout)
        self.attention_layer_norm = tf.keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="attention_layer_norm"
        )
        # "gelu" in tf-keras is the exact erf form (approximate=False), as in the reference.
        self.intermediate_dense = tf.keras.layers.Dense(
            intermediate_size,
            activation="gelu",
            kernel_initializer=_normal(initializer_range),
            name="intermediate_dense",
        )
        self.output_dense = tf.keras.layers.Dense(
            hidden_size, kernel_initializer=_normal(initializer_range), name="output_dense"
        )
        self.output_dropout = tf.keras.layers.Dropout(dropout)
        self.output_layer_norm = tf.keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="output_layer_norm"
        )

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        head_dim = self.hidden_size // self.num_heads
        attention = self.attention
        # Sublayers are built here, each in its own name scope (as their first call would), so
        # that every weight exists, with a readable name, as soon as the block is built (and can
        # be loaded, e.g. by s3rec_tf.reference, before any data went through).
        with tf.name_scope(attention.name):
            # tf-keras' MultiHeadAttention creates its projection layers here but their
            # variables only on first call.
            attention._build_from_signature(query=input_shape, value=input_shape)
            heads_shape = input_shape[:-1].concatenate([self.num_heads, head_dim])
            for projection, shape in (
                (attention._query_dense, input_shape),
                (attention._key_dense, input_shape),
                (attention._value_dense, input_shape),
                (attention._output_dense, heads_shape),
            ):
                with tf.name_scope(projection.name):
                    projection.build(shape)
        attention.built = True
        for layer, shape in (
            (self.attention_output_dropout, input_shape),
            (self.attention_layer_norm, input_shape),
            (self.intermediate_dense, input_shape),
            (self.output_dense, input_shape[:-1].concatenate([self.intermediate_size])),
            (self.output_dropout, input_shape),
            (self.output_layer_norm, input_shape),
        ):
            with tf.name_scope(layer.name):
                layer.build(shape)
        super().build(input_shape)

    def call(self, inputs, attention_mask, training=None, last_position_only=False):
        query = inputs
        if last_position_only:
            # Only the last position's output is wanted: it still attends to every key, but the
            # query projection, attention output and feed-forward run on one position.
            query = inputs[:, -1:, :]
            attention_mask = attention_mask[:, -1:, :]
        if self.attention_implementation == "keras":
            attended = self.attention(
                query, inputs, attention_mask=attention_mask, training=training
            )
        else:
            attended = self._matmul_attention(query, inputs, attention_mask, training)
        attended = self.attention_output_dropout(attended, training=training)
        hidden = self.attention_layer_norm(query + attended)
        transformed = self.output_dense(self.intermediate_dense(hidden))
        transformed = self.output_dropout(transformed, training=training)
        return self.output_layer_norm(hidden + transformed)

    def _matmul_attention(self, query, inputs, attention_mask, training):
        """`MultiHeadAttention(query, inputs)` on the sublayer's weights, in the order of its
        computation: project, scale the queries, masked softmax (−1e9 added to masked scores),
        dropout, weighted values, output projection."""
        attention = self.attention
        d, heads = self.hidden_size, self.num_heads
        head_dim = d // heads
        batch = tf.shape(inputs)[0]
        queries, keys = tf.shape(query)[1], tf.shape(inputs)[1]

        def project(x, length, dense):
            flat = tf.reshape(x, [-1, d])
            kernel = tf.reshape(dense.kernel, [d, d])  # [d, heads, head_dim] -> [d, d]
            projected = tf.matmul(flat, kernel) + tf.reshape(dense.bias, [d])
            # [B·L, d] -> [B, heads, L, head_dim]
            return tf.transpose(
                tf.reshape(projected, [batch, length, heads, head_dim]), [0, 2, 1, 3]
            )

        q = project(query, queries, attention._query_dense)
        q = tf.multiply(q, 1.0 / math.sqrt(float(head_dim)))
        k = project(inputs, keys, attention._key_dense)
        v = project(inputs, keys, attention._value_dense)
        scores = tf.matmul(q, k, transpose_b=True)  # [B, heads, T, S]
        mask = tf.expand_dims(attention_mask, axis=1)  # [B, 1, T or 1, S]
        scores += (1.0 - tf.cast(mask, scores.dtype)) * _large_negative(scores.dtype)
        probabilities = tf.nn.softmax(scores, axis=-1)
        probabilities = attention._dropout_layer(probabilities, training=training)
        context = tf.matmul(probabilities, v)  # [B, heads, T, head_dim]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, d])
        output_dense = attention._output_dense
        kernel = tf.reshape(output_dense.kernel, [d, d])  # [heads, head_dim, d] -> [d, d]
        output = tf.matmul(context, kernel) + output_dense.bias
        return tf.reshape(output, [batch, queries, d])

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
            layer_norm_epsilon=self.layer_norm_epsilon,
            attention_implementation=self.attention_implementation,
        )
        return config


def _large_negative(dtype):
    # What tf-keras' masked Softmax adds to masked scores (float16's −1e9 would overflow).
    return tf.float16.min / 2.0 if dtype == tf.float16 else -1e9


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class S3RecEncoder(tf.keras.layers.Layer):
    """S3-Rec / SASRec-style Transformer encoder over left-padded item-id sequences.

    Args:
      num_items: N, the number of real items. Ids: 0 = padding, 1..N = items, N + 1 = mask; the
        item table has N + 2 rows.
      max_seq_length: number of position embeddings; the widest batch the encoder accepts.
      hidden_size: d.
      num_layers, num_heads: Transformer depth and heads (hidden_size % num_heads == 0).
      dropout: dropout on the embeddings and after each attention / feed-forward sublayer.
      attention_dropout: dropout on the attention probabilities.
      initializer_range: stddev of the N(0, s) initializer of embeddings and kernels.
      layer_norm_epsilon: LayerNorm epsilon (1e-12 as the reference's TF-style LayerNorm).
      attention_implementation: "matmul" (default) or "keras"; see `TransformerBlock`.

    Call arguments:
      item_ids: int `[batch, W]`, left-padded with 0, W <= max_seq_length.
      causal: False = bidirectional attention over every non-padding key (pretraining; the mask
        id is attended); True = causal attention over non-padding keys (fine-tuning).
      training: enables dropout.
      last_position_only: return only the last position's output (the one next-item scoring and
        segment prediction use); the last block then runs its queries, attention output and
        feed-forward on that position alone.

    Returns: `[batch, W, hidden_size]`, or `[batch, hidden_size]` if last_position_only. Rows of
    padding positions are defined but meaningless (in causal mode a padding query can see no key
    at all); use only real positions.
    """

    def __init__(
        self,
        num_items: int,
        max_seq_length: int = 50,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        initializer_range: float = 0.02,
        layer_norm_epsilon: float = 1e-12,
        attention_implementation: str = "matmul",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("num_items", num_items),
            ("max_seq_length", max_seq_length),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"S3RecEncoder: {name} must be a positive integer, got {value!r}.")
        if hidden_size % num_heads:
            raise ValueError(
                f"S3RecEncoder: hidden_size ({hidden_size}) must be divisible by num_heads "
                f"({num_heads})."
            )
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"S3RecEncoder: {name} must be in [0, 1), got {value!r}.")
        self.num_items = num_items
        self.max_seq_length = max_seq_length
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention_implementation = attention_implementation

        self.embedding_layer_norm = tf.keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="embedding_layer_norm"
        )
        self.embedding_dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [
            TransformerBlock(
                hidden_size=hidden_size,
                num_heads=num_heads,
                intermediate_size=4 * hidden_size,
                dropout=dropout,
                attention_dropout=attention_dropout,
                initializer_range=initializer_range,
                layer_norm_epsilon=layer_norm_epsilon,
                attention_implementation=attention_implementation,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]

    def item_table(self) -> tf.Tensor:
        """The item table `[N + 2, hidden]` float32, read whole: gather rows from this, never
        from the variable `item_embeddings` itself.

        A gather from the variable (ResourceGather; also what `tf.gather(tf.cast(variable,
        tf.float32), ids)` runs, since that cast returns the variable) switches it to
        TensorFlow's copy-on-read mode for good: from then on every whole read (the losses' and
        the evaluation's scores against the table) and every in-place optimizer update copies
        the table first, 256 MB at a million items.
        """
        return tf.convert_to_tensor(self.item_embeddings)

    @property
    def mask_id(self) -> int:
        """The id that marks a masked item (N + 1)."""
        return self.num_items + 1

    def build(self, input_shape=None):
        # The weights do not depend on the input shape, so build() may be called without one.
        self.item_embeddings = self.add_weight(
            name="item_embeddings",
            shape=[self.num_items + 2, self.hidden_size],
            initializer=_TableNormal(self.initializer_range),
            autocast=False,  # read whole in float32 (see call), cast after the gather
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=[self.max_seq_length, self.hidden_size],
            initializer=_normal(self.initializer_range),
        )
        hidden_shape = tf.TensorShape([None, None, self.hidden_size])
        for layer in (self.embedding_layer_norm, self.embedding_dropout, *self.blocks):
            with tf.name_scope(layer.name):
                layer.build(hidden_shape)
        super().build(input_shape)

    def call(self, item_ids, causal=False, training=None, last_position_only=False):
        item_ids = tf.convert_to_tensor(item_ids)
        if not item_ids.dtype.is_integer:
            raise TypeError(f"S3RecEncoder expects integer item ids, got dtype {item_ids.dtype}.")
        if item_ids.shape.rank != 2:
            raise ValueError(
                f"S3RecEncoder expects item ids of shape [batch, W], got {item_ids.shape}."
            )
        static_width = item_ids.shape[1]
        if static_width is not None and static_width > self.max_seq_length:
            raise ValueError(
                f"S3RecEncoder: sequences of width {static_width} exceed max_seq_length "
                f"{self.max_seq_length}; truncate them (keep the most recent items) first."
            )
        width = tf.shape(item_ids)[1]
        checks = []
        if static_width is None:
            checks.append(
                tf.debugging.assert_less_equal(
                    width,
                    self.max_seq_length,
                    message="S3RecEncoder: batch width exceeds max_seq_length "
                    + str(self.max_seq_length),
                )
            )
        with tf.control_dependencies(checks):
            # Right-aligned positions: column j of a width-W batch is position max_len - W + j.
            positions = self.position_embeddings[self.max_seq_length - width :]
        items = tf.gather(self.item_table(), item_ids)
        hidden = tf.cast(items, self.compute_dtype) + positions
        hidden = self.embedding_layer_norm(hidden)
        hidden = self.embedding_dropout(hidden, training=training)

        is_key = tf.not_equal(item_ids, 0)[:, tf.newaxis, :]  # [batch, 1, W]
        if causal:
            steps = tf.range(width)
            earlier = steps[:, tf.newaxis] >= steps[tf.newaxis, :]  # [W (query), W (key)]
            attention_mask = tf.logical_and(is_key, earlier[tf.newaxis])  # [batch, W, W]
        else:
            attention_mask = is_key  # every query sees every real key
        for block in self.blocks[:-1]:
            hidden = block(hidden, attention_mask, training=training)
        hidden = self.blocks[-1](
            hidden, attention_mask, training=training, last_position_only=last_position_only
        )
        return hidden[:, -1, :] if last_position_only else hidden

    def get_config(self):
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            max_seq_length=self.max_seq_length,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
            layer_norm_epsilon=self.layer_norm_epsilon,
            attention_implementation=self.attention_implementation,
        )
        return config
