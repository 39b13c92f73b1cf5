"""Config -> models: the one place that reads a `Config` to build Keras objects.

The Keras classes (`keras_models`, `S3RecPretrainer`, `S3RecRecommender`) take plain arguments
and know nothing of the project's `Config`; training, export and the benchmarks build them here,
so a run is rebuilt the same way wherever it is read.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf import losses
from s3rec_tf.config import Config, ModelConfig
from s3rec_tf.data_files import ItemAttributes
from s3rec_tf.finetune import S3RecRecommender
from s3rec_tf.pretrain import S3RecPretrainer


def encoder_from_config(model: ModelConfig, num_items: int) -> S3RecEncoder:
    """The S3RecEncoder that `model` describes, for `num_items` items."""
    return S3RecEncoder(
        num_items=num_items,
        max_seq_length=model.max_seq_length,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        num_heads=model.num_heads,
        dropout=model.dropout,
        attention_dropout=model.attention_dropout,
        initializer_range=model.initializer_range,
        name="encoder",
    )


def pretrainer_from_config(
    config: Config,
    num_items: int,
    num_attributes: int,
    item_attributes: ItemAttributes,
    **kwargs,
) -> S3RecPretrainer:
    """The pretraining model of a validated `Config`: encoder, heads and objective weights.

    The heads compute in float32 whatever the global dtype policy (logits feed the losses).
    """
    config.validate()
    model = config.model
    heads = S3RecPretrainHeads(
        num_attributes=num_attributes,
        hidden_size=model.hidden_size,
        aap_rank=model.aap_rank,
        map_rank=model.resolved_map_rank,
        initializer_range=model.initializer_range,
        dtype="float32",
        name="heads",
    )
    weights = config.pretrain
    return S3RecPretrainer(
        encoder_from_config(model, num_items),
        heads,
        item_attributes,
        aap_weight=weights.aap_weight,
        mip_weight=weights.mip_weight,
        map_weight=weights.map_weight,
        sp_weight=weights.sp_weight,
        **kwargs,
    )


def recommender_from_config(
    config: Config,
    encoder: S3RecEncoder,
    targets_per_example: Optional[float] = None,
    popularity: Optional[np.ndarray] = None,
) -> S3RecRecommender:
    """The recommender of a Config (loss and protocol switches from config.finetune).

    targets_per_example: the data's mean (`data.mean_finetune_targets`), used when
    config.finetune.loss_normalizer is "dataset", where it is required.
    popularity: the items' training counts (`data.item_popularity`), needed by a loss that
    samples from popularity.
    """
    finetune = config.finetune
    if finetune.loss_normalizer == "batch":
        targets_per_example = None
    elif targets_per_example is None:
        raise ValueError(
            'finetune.loss_normalizer "dataset" needs targets_per_example '
            "(data.mean_finetune_targets of the training data)."
        )
    loss = losses.make(
        finetune.loss,
        encoder.num_items,
        gbce_t=finetune.gbce_t,
        num_samples=finetune.num_samples,
        sampler=finetune.sampler,
        in_batch_negatives=finetune.in_batch_negatives,
        popularity=popularity,
        seed=config.seed,
    )
    return S3RecRecommender(
        encoder,
        loss=loss,
        exclude_history=finetune.exclude_history,
        history_zero_metrics=finetune.history_zero_metrics,
        eval_item_chunk=finetune.eval_item_chunk,
        targets_per_example=targets_per_example,
        name="s3rec",
    )


def parameter_counts(model: S3RecPretrainer) -> dict:
    """Parameters of the pretraining model: all of them, and the AAP / MAP bilinear forms."""
    return {
        "total": int(model.count_params()),
        "encoder": int(model.encoder.count_params()),
        "aap": model.heads.aap.factor_parameter_count,
        "map": model.heads.map.factor_parameter_count,
    }
