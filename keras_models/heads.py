"""Pretraining heads of S3-Rec: the (low-rank) attribute bilinear head and the head container.

The reference scores a position h against every attribute e_a with a full bilinear form
h·W·e_a (+ a bias, as its `aap_norm`/`map_norm` are `Linear(d, d)`). `LowRankAAP` factorises W as
U·Vᵀ with U, V in R^{d x r} (in the spirit of DCN's `Cross(projection_dim=...)`), and computes
(h·U)·(E·V)ᵀ in that order, so scoring P positions against A attributes costs
P·d·r + A·d·r + P·A·r multiply-adds instead of P·d·d + P·A·d; U·Vᵀ is never formed.
"""

from typing import Optional

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class LowRankAAP(tf.keras.layers.Layer):
    """Bilinear scores of sequence positions against every attribute, optionally low-rank.

    logits[..., a] = (h·U)·(E_a·V)ᵀ + E_a·b   (rank = r)
    logits[..., a] = (h·K)·E_aᵀ + E_a·b       (rank = None: the reference's full d x d head;
                                              the reference's `aap_norm` loads as K = Wᵀ)

    Args:
      rank: None for the full d x d kernel, or r with 0 < r <= d (checked when d is known).
      use_bias: adds the E_a·b term (the reference's Linear bias b projected on each attribute).
      initializer_range: the full kernel is N(0, initializer_range), as the reference. Each low-
        rank factor is N(0, sqrt(initializer_range / sqrt(r))), so that the entries of U·Vᵀ start
        with the same standard deviation as the full kernel's.

    Call arguments:
      sequence_output: `[..., d]` float, e.g. `[batch, W, d]` or `[positions, d]`.
      attribute_embeddings: `[A, d]` float, every attribute row (row 0 included).

    Returns: logits `[..., A]`.
    """

    def __init__(
        self,
        rank: Optional[int] = None,
        use_bias: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0):
            raise ValueError(
                f"LowRankAAP: rank must be None (full rank) or a positive integer, got {rank!r}."
            )
        self.rank = rank
        self.use_bias = use_bias
        self.initializer_range = initializer_range

    def build(self, input_shape):
        hidden_size = tf.TensorShape(input_shape)[-1]
        if hidden_size is None:
            raise ValueError(
                f"LowRankAAP needs a known last dimension (hidden size); got shape {input_shape}."
            )
        if self.rank is not None and self.rank > hidden_size:
            raise ValueError(
                f"LowRankAAP: rank {self.rank} exceeds the hidden size {hidden_size}; use "
                f"0 < rank <= {hidden_size}, or rank=None for the full matrix."
            )
        self.hidden_size = hidden_size
        if self.rank is None:
            self.kernel = self.add_weight(
                name="kernel",
                shape=[hidden_size, hidden_size],
                initializer=tf.keras.initializers.RandomNormal(stddev=self.initializer_range),
            )
        else:
            factor_stddev = (self.initializer_range / self.rank**0.5) ** 0.5
            self.kernel_u = self.add_weight(
                name="kernel_u",
                shape=[hidden_size, self.rank],
                initializer=tf.keras.initializers.RandomNormal(stddev=factor_stddev),
            )
            self.kernel_v = self.add_weight(
                name="kernel_v",
                shape=[hidden_size, self.rank],
                initializer=tf.keras.initializers.RandomNormal(stddev=factor_stddev),
            )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=[hidden_size], initializer="zeros")
        super().build(input_shape)

    @property
    def factor_parameter_count(self) -> int:
        """Parameters of the bilinear form: d·d (full) or 2·d·r; the d bias terms NOT included.

        (`count_params()` counts every weight, bias included: d·d + d or 2·d·r + d.)
        """
        if not self.built:
            raise ValueError("LowRankAAP.factor_parameter_count: build the layer first.")
        d = self.hidden_size
        return d * d if self.rank is None else 2 * d * self.rank

    def call(self, sequence_output, attribute_embeddings):
        attribute_embeddings = tf.cast(attribute_embeddings, self.compute_dtype)
        if attribute_embeddings.shape.rank != 2:
            raise ValueError(
                f"LowRankAAP: attribute_embeddings must be [num_attributes, hidden], got "
                f"{attribute_embeddings.shape}."
            )
        if not attribute_embeddings.shape[-1:].is_compatible_with([self.hidden_size]):
            raise ValueError(
                f"LowRankAAP: attribute_embeddings have width {attribute_embeddings.shape[-1]}, "
                f"the sequence output {self.hidden_size}."
            )
        if self.rank is None:
            projected = tf.matmul(sequence_output, self.kernel)  # [..., d]
            attributes = attribute_embeddings  # [A, d]
        else:
            projected = tf.matmul(sequence_output, self.kernel_u)  # [..., r]
            attributes = tf.matmul(attribute_embeddings, self.kernel_v)  # [A, r]
        # A 2-D matmul: tf.einsum with "..." has a far slower gradient on CPU (~60x measured).
        flat = tf.reshape(projected, [-1, tf.shape(projected)[-1]])
        logits = tf.matmul(flat, attributes, transpose_b=True)  # [positions, A]
        logits = tf.reshape(
            logits, tf.concat([tf.shape(projected)[:-1], tf.shape(attributes)[:1]], axis=0)
        )
        if self.use_bias:
            logits += tf.linalg.matvec(attribute_embeddings, self.bias)  # [A], broadcast
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            rank=self.rank, use_bias=self.use_bias, initializer_range=self.initializer_range
        )
        return config


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class S3RecPretrainHeads(tf.keras.layers.Layer):
    """The attribute table and the four pretraining heads of S3-Rec (everything but the encoder).

    Weights: `attribute_embeddings` `[num_attributes + 1, d]` (row 0 unused, as the reference),
    `aap` and `map` (`LowRankAAP`, ranks `aap_rank` / `map_rank`), `mip_norm` and `sp_norm`
    (Dense d -> d with bias, the reference's `mip_norm` / `sp_norm`).

    Training calls the per-objective methods on exactly the positions each objective needs;
    `call` applies every head at every position (for inspection and export).

    Call arguments:
      sequence_output: `[..., d]`.

    Returns: dict with `aap_logits`, `map_logits` `[..., num_attributes + 1]` and
    `mip_projection`, `sp_projection` `[..., d]`.
    """

    def __init__(
        self,
        num_attributes: int,
        hidden_size: int = 64,
        aap_rank: Optional[int] = None,
        map_rank: Optional[int] = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_attributes", num_attributes), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(
                    f"S3RecPretrainHeads: {name} must be a positive integer, got {value!r}."
                )
        self.num_attributes = num_attributes
        self.hidden_size = hidden_size
        self.aap_rank = aap_rank
        self.map_rank = map_rank
        self.initializer_range = initializer_range
        # The heads compute in this layer's dtype policy (e.g. float32 logits under a mixed
        # global policy): sublayers do not inherit it on their own.
        policy = self.dtype_policy
        self.aap = LowRankAAP(
            aap_rank, initializer_range=initializer_range, dtype=policy, name="aap"
        )
        self.map = LowRankAAP(
            map_rank, initializer_range=initializer_range, dtype=policy, name="map"
        )
        # One initializer instance per kernel: tf-keras initializers are stateless, so a shared
        # instance would give both kernels the same values.
        self.mip_norm = tf.keras.layers.Dense(
            hidden_size,
            kernel_initializer=tf.keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=policy,
            name="mip_norm",
        )
        self.sp_norm = tf.keras.layers.Dense(
            hidden_size,
            kernel_initializer=tf.keras.initializers.RandomNormal(stddev=initializer_range),
            dtype=policy,
            name="sp_norm",
        )

    def build(self, input_shape=None):
        # Weight shapes follow from the constructor, so the heads can be built (and loaded)
        # before they see data.
        self.attribute_embeddings = self.add_weight(
            name="attribute_embeddings",
            shape=[self.num_attributes + 1, self.hidden_size],
            initializer=tf.keras.initializers.RandomNormal(stddev=self.initializer_range),
        )
        hidden_shape = tf.TensorShape([None, self.hidden_size])
        for head in (self.aap, self.map, self.mip_norm, self.sp_norm):
            with tf.name_scope(head.name):  # as the head's first call would name its weights
                head.build(hidden_shape)
        super().build(input_shape)

    def aap_logits(self, sequence_output):
        """Associated-attribute logits `[..., num_attributes + 1]` of `[..., d]` positions."""
        return self.aap(sequence_output, self.attribute_embeddings)

    def map_logits(self, sequence_output):
        """Masked-attribute logits `[..., num_attributes + 1]` of `[..., d]` positions."""
        return self.map(sequence_output, self.attribute_embeddings)

    def mip_logits(self, sequence_output, candidates):
        """sum(mip_norm(h)·e): positions `[..., d]` x candidate items `[..., C, d]` -> `[..., C]`.

        (C = 2 in pretraining: the positive and the negative item.)
        """
        projected = self.mip_norm(sequence_output)[..., tf.newaxis, :]
        return tf.reduce_sum(projected * tf.cast(candidates, projected.dtype), axis=-1)

    def sp_logits(self, context, candidates):
        """sum(sp_norm(c)·s): contexts `[..., d]` x candidate segments `[..., C, d]` -> `[..., C]`.

        (C = 2 in pretraining: the positive and the negative segment.)
        """
        projected = self.sp_norm(context)[..., tf.newaxis, :]
        return tf.reduce_sum(projected * tf.cast(candidates, projected.dtype), axis=-1)

    def call(self, sequence_output):
        return {
            "aap_logits": self.aap_logits(sequence_output),
            "map_logits": self.map_logits(sequence_output),
            "mip_projection": self.mip_norm(sequence_output),
            "sp_projection": self.sp_norm(sequence_output),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_attributes=self.num_attributes,
            hidden_size=self.hidden_size,
            aap_rank=self.aap_rank,
            map_rank=self.map_rank,
            initializer_range=self.initializer_range,
        )
        return config
