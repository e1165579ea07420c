"""Which of a template's pairs condition a query: the released random draw, the nearest,
or the same pairs for every query.

random: `num_prompt` pair indices drawn with replacement by numpy, query after query,
  from one generator seeded by the run's seed (the released CLI's draw).
fixed: the random draw's first query's pairs, for every query. With an
  independent-condition J-DiT their keys and values are then computed once
  (`inference.pipeline.SharedContext`).
nearest: the K distinct pairs whose input is most like the query: cosine similarity of
  `features` (posterior means averaged over a grid of cells) after subtracting the
  template's mean feature; the pairs are ordered by rising similarity, so the nearest
  sits next to the query in the condition. Deterministic.
"""

import numpy as np

from lavin_jax.configs import sampling as sampling_configs

SELECTIONS = sampling_configs.SELECTIONS


def random_picks(rng: np.random.Generator, num_pairs: int, k: int, count: int) -> np.ndarray:
  """(count, k) indices into `num_pairs` pairs, k per query with replacement, as released."""
  return np.stack([rng.integers(0, num_pairs, size=k) for _ in range(count)])


def fixed_picks(rng: np.random.Generator, num_pairs: int, k: int, count: int) -> np.ndarray:
  """(count, k) indices: one query's `random_picks`, the same for every query."""
  return np.repeat(random_picks(rng, num_pairs, k, 1), count, axis=0)


def _cells(n: int, grid: int) -> list[tuple[int, int]]:
  """[start, end) of `grid` cells over n entries (adaptive average pooling's rule)."""
  return [(i * n // grid, -(-(i + 1) * n // grid)) for i in range(grid)]


def features(mean, grid: int = sampling_configs.SELECT_GRID) -> np.ndarray:
  """(N, T', h, w, C) latents -> (N, T' * grid * grid * C) cell averages (float64)."""
  mean = np.asarray(mean, np.float64)
  h, w = mean.shape[2:4]
  rows = [mean[:, :, r0:r1].mean(axis=2) for r0, r1 in _cells(h, grid)]
  cells = [[row[:, :, c0:c1].mean(axis=2) for c0, c1 in _cells(w, grid)] for row in rows]
  return np.stack([np.stack(row, axis=2) for row in cells], axis=2).reshape(len(mean), -1)


def nearest(query: np.ndarray, pool: np.ndarray, k: int, center: bool = True) -> np.ndarray:
  """(B, k) indices of the `pool` rows most like each `query` row, least like first.

  query (B, D) and pool (N, D) are `features`; with center, both lose the pool's mean
  first, so what every example shares does not decide the similarity.
  """
  if k > len(pool):
    raise ValueError(
      f"nearest context selection picks {k} distinct pairs, but the template has "
      f"{len(pool)}; lower --num_prompt or add pairs."
    )
  if center:
    query, pool = query - pool.mean(axis=0), pool - pool.mean(axis=0)
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  similarity = unit(query) @ unit(pool).T  # (B, N)
  order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
  return order[:, ::-1].copy()
