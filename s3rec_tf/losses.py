"""Fine-tuning losses of next-item prediction: one class per loss, found by name in one registry.

A loss scores the causal encoder's states against the item table and returns one value per
position; `S3RecRecommender` masks the non-target positions, sums and normalises. Adding a loss
is a class here with `@register("name")` (and its tests): the configuration, the command line
and the builders read the registry.

    loss = make("sampled_softmax", num_items=N, num_samples=256, sampler="popularity",
                popularity=counts, seed=42)
    per_position = loss(states, targets, table, batch, step)   # [B, W] float32

Shapes: states `[B, W, d]` float32 (the causal encodings), targets `[B, W]` int (0 where a
position has no target), table `[N + 2, d]` float32 (ids 0 = padding and N + 1 = mask are never
answers), batch the fine-tuning batch dict (`NEGATIVE_IDS` `[B, W, k]` for the losses that read
the input pipeline's negatives), step a scalar int (the optimizer's iteration count: losses that
draw their own samples seed them from it, so a resumed run draws what an uninterrupted one does).

Losses:
  bce              one sampled negative per position (the reference): softplus(−s₊) + softplus(s₋);
  gbce             gSASRec's calibrated BCE (Petrov & Macdonald, RecSys 2023): k negatives, the
                   positive term scaled by β = α(t(1 − 1/α) + 1/α), α = k / (N − 1);
  ce               cross-entropy over the whole catalogue: [B, W, N + 2] logits;
  sampled_softmax  cross-entropy over the target and k negatives shared by the batch, drawn from
                   a proposal q (uniform or training popularity) with the logQ correction
                   (every logit minus log q(item); Yi et al., RecSys 2019; Bengio & Senécal
                   2008), negatives equal to the position's target removed (accidental hits);
                   memory [B, W, k]: the catalogue only enters through the k sampled rows.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from s3rec_tf import data as data_lib

LOSSES: dict[str, type[NextItemLoss]] = {}
SAMPLERS = ("uniform", "popularity")

# Added to a logit that must not count (an accidental hit, a padding or mask id); finite, so that
# 0 · it stays 0 in the gradient.
_EXCLUDED = -1e9


def register(name: str):
    """Class decorator: makes the loss available as `name` (config, command line, builders)."""

    def add(cls):
        if name in LOSSES:
            raise ValueError(f"A fine-tuning loss named {name!r} is already registered.")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return add


def names() -> tuple[str, ...]:
    return tuple(LOSSES)


def make(name: str, num_items: int, **params) -> NextItemLoss:
    """The loss `name` for `num_items` items; `params` are its constructor's keywords (those it
    does not take are ignored, so one call site can pass every loss setting)."""
    if name not in LOSSES:
        raise ValueError(f"Unknown fine-tuning loss {name!r}; registered: {', '.join(LOSSES)}.")
    cls = LOSSES[name]
    accepted = cls.__init__.__code__.co_varnames[: cls.__init__.__code__.co_argcount]
    return cls(num_items, **{k: v for k, v in params.items() if k in accepted})


class NextItemLoss:
    """Base class. Subclasses implement `__call__` and list their settings in `get_config`."""

    name = ""

    def __init__(self, num_items: int):
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"num_items must be a positive integer, got {num_items!r}.")
        self.num_items = num_items

    def __call__(self, states, targets, table, batch, step):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def check_fits(cls, num_items: int, batch_size: int, width: int, memory_bytes: int) -> None:
        """Raises ValueError, before any work, when a step of this loss cannot fit in
        `memory_bytes`; the losses here whose tensors grow with the catalogue override it."""


@register("bce")
class BinaryCrossEntropy(NextItemLoss):
    """softplus(−s₊) + Σ_j softplus(s₋ⱼ) over the pipeline's negatives (one in the reference)."""

    def __call__(self, states, targets, table, batch, step):
        pos_logits, neg_logits = _pair_logits(states, targets, table, batch)
        return tf.nn.softplus(-pos_logits) + tf.reduce_sum(tf.nn.softplus(neg_logits), -1)


@register("gbce")
class GeneralizedBinaryCrossEntropy(NextItemLoss):
    """gBCE: the positive term raised to the power β (a factor β on −log σ(s₊))."""

    def __init__(self, num_items: int, gbce_t: float = 0.75):
        super().__init__(num_items)
        if not 0.0 <= gbce_t <= 1.0:
            raise ValueError(f"gbce_t must be in [0, 1], got {gbce_t!r}.")
        self.gbce_t = gbce_t

    def __call__(self, states, targets, table, batch, step):
        pos_logits, neg_logits = _pair_logits(states, targets, table, batch)
        k = tf.cast(tf.shape(neg_logits)[-1], tf.float32)
        alpha = k / tf.cast(self.num_items - 1, tf.float32)
        beta = alpha * (self.gbce_t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
        return beta * tf.nn.softplus(-pos_logits) + tf.reduce_sum(tf.nn.softplus(neg_logits), -1)

    def get_config(self):
        return {"gbce_t": self.gbce_t}


@register("ce")
class FullSoftmax(NextItemLoss):
    """Cross-entropy over items 1..N: logits `[B, W, N + 2]` (memory grows with the catalogue)."""

    def __call__(self, states, targets, table, batch, step):
        logits = tf.einsum("bwd,nd->bwn", states, table)  # [B, W, N + 2]
        ids = tf.range(tf.shape(table)[0])
        valid = (ids > 0) & (ids <= self.num_items)  # padding 0 and the mask id are no answers
        logits = tf.where(valid, logits, tf.cast(_EXCLUDED, logits.dtype))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.int32), logits=logits
        )

    # A step holds the logits, their masked copy and the softmax's gradient at once.
    LIVE_LOGIT_COPIES = 3

    @classmethod
    def check_fits(cls, num_items, batch_size, width, memory_bytes):
        logit_bytes = 4 * batch_size * width * (num_items + 2)
        if cls.LIVE_LOGIT_COPIES * logit_bytes <= memory_bytes:
            return
        raise ValueError(
            f"--loss ce computes [batch {batch_size}, positions {width}, items {num_items + 2:,}] "
            f"logits: {logit_bytes / 2**30:.1f} GiB in float32, about "
            f"{cls.LIVE_LOGIT_COPIES * logit_bytes / 2**30:.1f} GiB live in a step, on a machine "
            f"with {memory_bytes / 2**30:.1f} GiB of memory. Use --loss sampled_softmax "
            "--num_samples 1024 (its logits are [batch, positions, 1 + k], whatever the "
            "catalogue), or a smaller --finetune_batch_size."
        )


@register("sampled_softmax")
class SampledSoftmax(NextItemLoss):
    """Cross-entropy over the target and `num_samples` negatives shared by the batch.

    Args:
      num_items: N.
      num_samples: k, drawn with replacement once per step.
      sampler: "uniform" (q = 1/N) or "popularity" (q ∝ the training interaction count + 1,
        `popularity` required).
      popularity: interaction counts of ids 0..N + 1 (`data.item_popularity`); ids 0 and N + 1
        are never drawn.
      logq_correction: subtract log q(item) from every logit (target and negatives), which makes
        the sampled softmax an unbiased estimate of the full one's gradient as k grows.
      seed: the draws of step s are a function of (seed, s) alone.
      in_batch_negatives: also use k of the batch's own targets as negatives (the items of k
        positions drawn with the same seed; a padding position adds none): mixed negative
        sampling (Yang et al., WWW 2020). Targets follow the items' popularity, so the expected
        count of item i among a step's negatives is k·q(i) + n·p(i) (n in-batch picks, p the
        popularity share), and the logQ term is log of that. Memory `[B, W, 2k]`; needs
        `popularity`.

    Why not `tf.nn.sampled_softmax_loss` or TFRS' `Retrieval` task: the former's candidate
    samplers are stateful ops (other draws after a resume; seeds ignored under XLA) and it takes
    a `[P, d]` input per target, not `[B, W, d]` with masked positions; TFRS' task expects
    in-batch candidates. The draws here are stateless and seeded by (seed, step), sampling is an
    inverse-CDF `searchsorted` (O(k log N), not O(k N) like `tf.random.categorical` over N
    logits), and the accidental-hit mask and logQ term follow TFRS (`remove_accidental_hits`,
    `candidate_sampling_probability`).
    """

    def __init__(
        self,
        num_items: int,
        num_samples: int = 256,
        sampler: str = "uniform",
        popularity: Optional[np.ndarray] = None,
        logq_correction: bool = True,
        seed: int = 0,
        in_batch_negatives: bool = False,
    ):
        super().__init__(num_items)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        self.num_samples = num_samples
        self.sampler = sampler
        self.logq_correction = logq_correction
        self.seed = int(seed)
        self.in_batch_negatives = bool(in_batch_negatives)
        share = None
        if sampler == "popularity" or in_batch_negatives:
            if popularity is None:
                what = 'sampler "popularity"' if sampler == "popularity" else "in_batch_negatives"
                raise ValueError(f"{what} needs the items' training counts (popularity).")
            counts = np.asarray(popularity, np.float64)
            if counts.shape != (num_items + 2,):
                raise ValueError(
                    f"popularity must hold the counts of ids 0..N + 1 ({num_items + 2} values), "
                    f"got shape {counts.shape}."
                )
            # +1: an item seen only in validation or test still has a chance to be a negative.
            share = counts[1 : num_items + 1] + 1.0
            share = share / share.sum()
        q = np.full(num_items, 1.0 / num_items) if sampler == "uniform" else share
        # q and the popularity share of ids 0..N + 1 (padding and mask: never drawn, never
        # targets; 1 keeps their logarithm finite).
        self._q = tf.constant(np.concatenate([[1.0], q, [1.0]]), tf.float32)
        self._log_q = tf.math.log(self._q)
        self._share = None
        if share is not None:
            self._share = tf.constant(np.concatenate([[1.0], share, [1.0]]), tf.float32)
        cdf = np.cumsum(q)
        cdf[-1] = 1.0
        self._cdf = tf.constant(cdf, tf.float32)

    def sample(self, step) -> tf.Tensor:
        """The k negatives of `step`, `[k]` int32 ids in 1..N (with replacement)."""
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, 0x5A3F], tf.int64), tf.cast(step, tf.int64)
        )
        if self.sampler == "uniform":
            return tf.random.stateless_uniform(
                [self.num_samples], seed, minval=1, maxval=self.num_items + 1, dtype=tf.int32
            )
        u = tf.random.stateless_uniform([self.num_samples], seed, dtype=tf.float32)
        index = tf.searchsorted(self._cdf, u, side="right", out_type=tf.int32)
        return tf.minimum(index, self.num_items - 1) + 1

    def in_batch_sample(self, targets, step) -> tf.Tensor:
        """`[k]` target ids of k positions of the batch drawn with replacement (0 where a
        padding position was drawn: left out of every softmax)."""
        flat = tf.reshape(tf.cast(targets, tf.int32), [-1])
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, 0x1B47], tf.int64), tf.cast(step, tf.int64)
        )
        picks = tf.random.stateless_uniform(
            [self.num_samples], seed, minval=0, maxval=tf.size(flat), dtype=tf.int32
        )
        return tf.gather(flat, picks)

    def __call__(self, states, targets, table, batch, step):
        negatives = self.sample(step)
        log_q = self._log_q
        if self.in_batch_negatives:
            in_batch = self.in_batch_sample(targets, step)
            negatives = tf.concat([negatives, in_batch], axis=0)
            n = tf.reduce_sum(tf.cast(in_batch > 0, tf.float32))
            log_q = tf.math.log(self.num_samples * self._q + n * self._share)
        return sampled_softmax_per_position(
            states, targets, table, negatives, log_q if self.logq_correction else None
        )

    def get_config(self):
        # The popularity counts are data, not settings: the builder passes them again.
        return {
            "num_samples": self.num_samples,
            "sampler": self.sampler,
            "logq_correction": self.logq_correction,
            "seed": self.seed,
            "in_batch_negatives": self.in_batch_negatives,
        }


def sampled_softmax_per_position(states, targets, table, negatives, log_q=None):
    """−log softmax of the target among {target} ∪ negatives, per position: `[B, W]`.

    negatives: `[k]` ids shared by every position; one equal to a position's target is left out
    of that position's softmax (an accidental hit), and id 0 (padding) of every one. log_q:
    `[N + 2]` log proposal probabilities subtracted from every logit, or None for none. With
    every id 1..N as negatives, uniform q (or None) and accidental hits removed, this is the full
    softmax's cross-entropy.
    """
    targets = tf.cast(targets, tf.int32)
    negatives = tf.cast(negatives, tf.int32)
    pos_logits = tf.reduce_sum(states * tf.gather(table, targets), -1)  # [B, W]
    neg_logits = tf.einsum("bwd,kd->bwk", states, tf.gather(table, negatives))  # [B, W, k]
    if log_q is not None:
        pos_logits -= tf.gather(log_q, targets)
        neg_logits -= tf.gather(log_q, negatives)
    hits = tf.equal(targets[..., tf.newaxis], negatives) | tf.equal(negatives, 0)  # [B, W, k]
    neg_logits = tf.where(hits, tf.cast(_EXCLUDED, neg_logits.dtype), neg_logits)
    logits = tf.concat([pos_logits[..., tf.newaxis], neg_logits], -1)  # [B, W, 1 + k]
    return tf.reduce_logsumexp(logits, -1) - pos_logits


def _pair_logits(states, targets, table, batch):
    """Positive logits `[B, W]` and the pipeline negatives' logits `[B, W, k]`."""
    negatives = batch[data_lib.NEGATIVE_IDS]
    pos_logits = tf.reduce_sum(states * tf.gather(table, targets), -1)
    neg_logits = tf.einsum("bwd,bwkd->bwk", states, tf.gather(table, negatives))
    return pos_logits, neg_logits
