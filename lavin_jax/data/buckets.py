"""Context-size buckets: each batch padded to one context size, K's distribution kept.

An episode holds K context pairs, K uniform in [k_min, k_max]. J-DiT reads 2 s + 2
clips of an episode padded to s context slots (the condition's 2 s + 1 and the target),
of which 2 (s - K) are padding. Padding every episode to k_max wastes 39 % of the
tokens for K in 1..8. Instead the sizes are cut into buckets at the bounds
`config.k_buckets` (k_max always one): K in (previous bound, b] is padded to b. Every
global batch draws one bucket by its probability mass, then each of its episodes draws
K among the bucket's sizes in proportion to theirs: K keeps its distribution, a batch
has one shape. The default, every K its own bucket, pads nothing; a run compiles one
step per K (and frame count).

The bucket of a batch is a function of (seed, batch index) and an episode's K of its
generator: the same on every process, and the same after a resume.
"""

import ml_collections
import numpy as np


def bounds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The padded context sizes, ascending, the last k_max (see the module doc).

  Raises:
    ValueError: a bound outside [k_min, k_max].
  """
  k_min, k_max = config.k_min, config.k_max
  given = tuple(config.k_buckets)
  if not given:
    return tuple(range(k_min, k_max + 1))
  bad = [b for b in given if not k_min <= b <= k_max]
  if bad:
    raise ValueError(
      f"k_buckets {given} holds {bad}, outside [k_min, k_max] = [{k_min}, {k_max}]; give "
      "padded context sizes in that range, or () for one bucket per K."
    )
  return tuple(sorted(set(given) | {k_max}))


def pair_probs(config: ml_collections.ConfigDict) -> np.ndarray:
  """P(K) for K = k_min..k_max: uniform."""
  sizes = config.k_max - config.k_min + 1
  return np.full(sizes, 1.0 / sizes)


def _slots(config: ml_collections.ConfigDict) -> np.ndarray:
  """The padded size of each K = k_min..k_max."""
  sizes = np.arange(config.k_min, config.k_max + 1)
  edges = np.asarray(bounds(config))
  return edges[np.searchsorted(edges, sizes)]


class Sampler:
  """Draws (K, slots) of the episodes of a stream of batches of `batch_size` episodes."""

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int, seed: int):
    self._k_min, self._batch_size, self._seed = config.k_min, batch_size, seed
    probs, slots = pair_probs(config), _slots(config)
    self._edges = np.asarray(bounds(config))
    self._bucket_probs = np.array([probs[slots == b].sum() for b in self._edges])
    self._within = [probs * (slots == b) / probs[slots == b].sum() for b in self._edges]

  def slots(self, batch: int) -> int:
    """The context slots of every episode of global batch `batch`."""
    rng = np.random.default_rng((self._seed, batch))
    return int(self._edges[rng.choice(len(self._edges), p=self._bucket_probs)])

  def __call__(self, position: int, rng: np.random.Generator) -> tuple[int, int]:
    """(K, slots) of the episode at `position` of the unsharded stream; K drawn by rng."""
    slots = self.slots(position // self._batch_size)
    within = self._within[int(np.searchsorted(self._edges, slots))]
    return self._k_min + int(rng.choice(len(within), p=within)), slots


def padding_fraction(config: ml_collections.ConfigDict) -> float:
  """The expected share of J-DiT tokens that are padded context pairs."""
  probs, slots = pair_probs(config), _slots(config)
  sizes = np.arange(config.k_min, config.k_max + 1)
  return float(np.sum(probs * 2 * (slots - sizes)) / np.sum(probs * (2 * slots + 2)))


def measured_padding_fraction(batches) -> float:
  """The share of padded context clips among the clips J-DiT reads, over `batches`.

  Each batch's clips hold one number of tokens, so this is the token share for
  batches of one frame count.
  """
  padded = total = 0
  for batch in batches:
    slots = np.shape(batch["context_inputs"])[1]
    num_pairs = np.asarray(batch["num_pairs"])
    padded += int(np.sum(2 * (slots - num_pairs)))
    total += (2 * slots + 2) * len(num_pairs)
  return padded / total
