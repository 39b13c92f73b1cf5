"""Import of the original S3-Rec implementation's weights (RUCAIBox/CIKM2020-S3Rec, PyTorch).

The weights come as an .npz of the PyTorch state dict (one array per parameter, same names, by
default under the prefix `weights/`, as in ../shared/reference/s3rec_reference_beauty.npz).
PyTorch `Linear` weights are stored `[out, in]` (y = x·Wᵀ + b); Keras kernels are `[in, out]`, and
MultiHeadAttention splits the projections per head (`[d, heads, head_dim]` for query/key/value,
`[heads, head_dim, d]` for the output), so kernels are transposed and reshaped on the way in.

Everything is checked before anything is assigned: a wrong name, a wrong shape, or a weight that
nothing would consume raises one ValueError listing every problem, and the layers keep their old
values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from keras_models import S3RecEncoder, S3RecPretrainHeads

DEFAULT_PREFIX = "weights/"

_HEAD_KEYS = ("attribute_embeddings.", "aap_norm.", "mip_norm.", "map_norm.", "sp_norm.")


def _linear(weight_key, variable, input_axes=1):
    """A `Linear` weight [out, in] for a kernel whose first `input_axes` axes are the input."""
    shape = variable.shape.as_list()
    fan_in = int(np.prod(shape[:input_axes]))
    fan_out = int(np.prod(shape[input_axes:]))
    return weight_key, variable, (fan_out, fan_in), lambda w: w.T.reshape(shape)


def _vector(weight_key, variable):
    """A bias or LayerNorm vector; MultiHeadAttention keeps biases split per head."""
    shape = variable.shape.as_list()
    return weight_key, variable, (int(np.prod(shape)),), lambda w: w.reshape(shape)


def _table(weight_key, variable):
    """An embedding table, stored as is."""
    return weight_key, variable, tuple(variable.shape.as_list()), lambda w: w


def _encoder_plan(encoder: S3RecEncoder) -> list:
    plan = [
        _table("item_embeddings.weight", encoder.item_embeddings),
        _table("position_embeddings.weight", encoder.position_embeddings),
        _vector("LayerNorm.weight", encoder.embedding_layer_norm.gamma),
        _vector("LayerNorm.bias", encoder.embedding_layer_norm.beta),
    ]
    for i, block in enumerate(encoder.blocks):
        prefix = f"item_encoder.layer.{i}."
        attention = block.attention
        for name, dense in (
            ("query", attention._query_dense),
            ("key", attention._key_dense),
            ("value", attention._value_dense),
        ):
            plan.append(_linear(f"{prefix}attention.{name}.weight", dense.kernel))
            plan.append(_vector(f"{prefix}attention.{name}.bias", dense.bias))
        output = attention._output_dense
        plan += [
            _linear(f"{prefix}attention.dense.weight", output.kernel, input_axes=2),
            _vector(f"{prefix}attention.dense.bias", output.bias),
            _vector(f"{prefix}attention.LayerNorm.weight", block.attention_layer_norm.gamma),
            _vector(f"{prefix}attention.LayerNorm.bias", block.attention_layer_norm.beta),
            _linear(f"{prefix}intermediate.dense_1.weight", block.intermediate_dense.kernel),
            _vector(f"{prefix}intermediate.dense_1.bias", block.intermediate_dense.bias),
            _linear(f"{prefix}intermediate.dense_2.weight", block.output_dense.kernel),
            _vector(f"{prefix}intermediate.dense_2.bias", block.output_dense.bias),
            _vector(f"{prefix}intermediate.LayerNorm.weight", block.output_layer_norm.gamma),
            _vector(f"{prefix}intermediate.LayerNorm.bias", block.output_layer_norm.beta),
        ]
    return plan


def _heads_plan(heads: S3RecPretrainHeads, problems: list, claimed: set) -> list:
    plan = [_table("attribute_embeddings.weight", heads.attribute_embeddings)]
    for name, head in (("aap_norm", heads.aap), ("map_norm", heads.map)):
        if head.rank is not None:
            problems.append(
                f"{name}: the reference head is a full d x d matrix, but this {head.name!r} head "
                f"has rank {head.rank}; build the heads with rank None to import it."
            )
            claimed.update({f"{name}.weight", f"{name}.bias"})
            continue
        plan.append(_linear(f"{name}.weight", head.kernel))
        plan.append(_vector(f"{name}.bias", head.bias))
    for name, dense in (("mip_norm", heads.mip_norm), ("sp_norm", heads.sp_norm)):
        plan.append(_linear(f"{name}.weight", dense.kernel))
        plan.append(_vector(f"{name}.bias", dense.bias))
    return plan


def load_reference_weights(
    npz: Union[str, Mapping[str, np.ndarray]],
    encoder: S3RecEncoder,
    heads: Optional[S3RecPretrainHeads] = None,
    prefix: str = DEFAULT_PREFIX,
) -> list:
    """Loads the reference's weights into `encoder` (and `heads`, if given).

    Args:
      npz: path of the .npz (any TF file system) or an already loaded mapping of arrays.
      encoder: the S3RecEncoder; built here if it is not yet.
      heads: the S3RecPretrainHeads (aap/map with rank None), or None to load the encoder only
        (the head weights in the file are then skipped, as for fine-tuning).
      prefix: the prefix of the state-dict names inside the file.

    Returns: the sorted file keys that were loaded.

    Raises:
      ValueError: listing every missing name, wrong shape and unused weight; nothing is assigned.
    """
    source = npz if isinstance(npz, str) else "<arrays>"
    arrays = _read(npz)
    if not any(key.startswith(prefix) for key in arrays):
        raise ValueError(
            f"Cannot load reference weights from {source}: no array name starts with {prefix!r} "
            f"(names: {sorted(arrays)[:5]}...); pass the right `prefix`."
        )
    if not encoder.built:
        encoder.build(None)
    problems: list = []
    claimed: set = set()  # file keys accounted for by a reported problem
    plan = _encoder_plan(encoder)
    if heads is not None:
        if not heads.built:
            heads.build(None)
        plan += _heads_plan(heads, problems, claimed)

    assignments = []
    for key, variable, expected_shape, convert in plan:
        full_key = prefix + key
        if full_key not in arrays:
            problems.append(f"missing {full_key!r} (for {variable.name}, shape {expected_shape})")
            continue
        value = np.asarray(arrays[full_key])
        if value.shape != tuple(expected_shape):
            problems.append(
                f"{full_key!r} has shape {value.shape}, {variable.name} needs "
                f"{tuple(expected_shape)}"
            )
            continue
        assignments.append((full_key, variable, convert(value)))

    used = {prefix + key for key, *_ in plan} | {prefix + key for key in claimed}
    unused = []
    for key in sorted(arrays):
        if not key.startswith(prefix) or key in used:
            continue
        if heads is None and key[len(prefix) :].startswith(_HEAD_KEYS):
            continue
        unused.append(key)
    if unused:
        problems.append(
            f"weights that nothing consumes: {unused} (an encoder with {encoder.num_layers} layers "
            "was given; does the file come from another architecture?)"
        )
    if problems:
        raise ValueError(
            f"Cannot load reference weights from {source}:\n  - " + "\n  - ".join(problems)
        )
    for _, variable, value in assignments:
        variable.assign(value.astype(variable.dtype.as_numpy_dtype))
    logging.info("Loaded %d reference arrays from %s.", len(assignments), source)
    return sorted(key for key, _, _ in assignments)


def _read(npz: Union[str, Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    if not isinstance(npz, str):
        return npz
    if not tf.io.gfile.exists(npz):
        raise FileNotFoundError(f"Reference weights file {npz!r} not found.")
    with tf.io.gfile.GFile(npz, "rb") as f:
        try:
            with np.load(f) as data:
                return {key: data[key] for key in data.files}
        except (ValueError, OSError) as e:
            raise ValueError(f"{npz}: not a readable .npz file ({e}).") from e
