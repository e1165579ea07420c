"""Latent episodes: the in-context layout from a table of precomputed posterior moments."""

import numpy as np
import pytest

from lavin_jax.configs import data as data_configs
from lavin_jax.configs import tasks as task_table
from lavin_jax.data import latents
from lavin_jax.data import tasks

N, RES = 6, 32


def _source():
  rng = np.random.default_rng(0)
  return [
    {
      "image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
      "depth": rng.uniform(1, 10, (40, 40)).astype(np.float32),
    }
    for _ in range(N)
  ]


def _encode(pixels):
  """A stand-in encoder: 8x8 mean pooling to (B, 1, 4, 4, 3) tiled to 16 channels."""
  b, t, h, w, _ = pixels.shape
  pooled = pixels.reshape(b, t, h // 8, 8, w // 8, 8, 3).mean(axis=(3, 5))
  mean = np.concatenate([pooled] * 5 + [pooled[..., :1]], axis=-1)
  return mean, np.full(mean.shape, -30.0, np.float32)  # near-zero posterior noise


def _config(**overrides):
  c = data_configs.pipeline("image")
  for name in c.task_weights:
    c.task_weights[name] = float(name in ("depth_estimation", "colorization"))
  c.batch_size, c.k_min, c.k_max = 4, 1, 3
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def tables():
  return latents.encode_task_pairs(
    _source(),
    ["depth_estimation", "colorization"],
    RES,
    _encode,
    task_table.options(),
    batch_size=4,
  )


def test_table_holds_each_task_pair_encoded(tables):
  source = _source()
  task = tasks.get_task("depth_estimation")
  inputs, targets = latents.render_task_pairs(source, task, RES)
  assert set(tables) == {"depth_estimation", "colorization"}
  np.testing.assert_allclose(
    tables["depth_estimation"]["target_mean"], _encode(targets)[0], rtol=1e-6
  )
  np.testing.assert_allclose(
    tables["depth_estimation"]["input_mean"], _encode(inputs)[0], rtol=1e-6
  )
  assert tables["colorization"]["input_mean"].shape == (N, 1, 4, 4, 16)


def test_tasks_sharing_their_inputs_encode_them_once():
  source = _source()
  pairs = {
    name: latents.render_task_pairs(source, tasks.get_task(name), RES)
    for name in ("depth_estimation", "colorization")
  }
  calls = []

  def encode(pixels):
    calls.append(pixels.shape)
    return _encode(pixels)

  shared = dict(pairs, depth_copy=pairs["depth_estimation"])
  tables = latents.encode_pairs(shared, encode, batch_size=N)
  # The photograph (depth input, colorization target), the depth map, the grey input.
  assert len(calls) == 3
  np.testing.assert_array_equal(
    tables["depth_copy"]["input_mean"], tables["depth_estimation"]["input_mean"]
  )
  np.testing.assert_array_equal(
    tables["colorization"]["target_mean"], tables["depth_estimation"]["input_mean"]
  )
  np.testing.assert_allclose(
    tables["colorization"]["input_mean"], _encode(pairs["colorization"][0])[0], rtol=1e-6
  )


def test_episodes_layout_padding_and_normalisation(tables):
  shift, scale = 0.1, 2.0
  batches = iter(latents.make_latent_pipeline(tables, _config(), shift, scale))
  names = list(tables)
  for _ in range(5):
    batch = next(batches)
    assert batch["context_inputs"].shape == (4, 3, 1, 4, 4, 16)
    assert batch["query"].shape == batch["target"].shape == (4, 1, 4, 4, 16)
    for b in range(4):
      k = int(batch["num_pairs"][b])
      assert 1 <= k <= 3
      assert not batch["context_inputs"][b, k:].any()
      table = tables[tasks.TASK_NAMES[batch["task_id"][b]]]
      # The query is one example's normalised input mean, and never one of the contexts.
      raw = batch["query"][b] / scale + shift
      query = [i for i in range(N) if np.allclose(table["input_mean"][i], raw, atol=1e-5)]
      assert len(query) == 1
      contexts = [
        i
        for i in range(N)
        for c in batch["context_inputs"][b, :k]
        if np.allclose(table["input_mean"][i], c / scale + shift, atol=1e-5)
      ]
      assert len(contexts) == k and query[0] not in contexts
      np.testing.assert_allclose(
        batch["target"][b] / scale + shift, table["target_mean"][query[0]], atol=1e-5
      )
    assert {tasks.TASK_NAMES[i] for i in batch["task_id"]} <= set(names)


def test_deterministic_and_resumable(tables):
  config = _config()
  first = iter(latents.make_latent_pipeline(tables, config, 0.0, 1.0))
  next(first)
  state = first.get_state()
  want = next(first)
  again = iter(latents.make_latent_pipeline(tables, config, 0.0, 1.0))
  again.set_state(state)
  got = next(again)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key])


def test_process_shards_split_the_batch(tables):
  config = _config()
  halves = [
    next(iter(latents.make_latent_pipeline(tables, config, 0.0, 1.0, p, 2))) for p in range(2)
  ]
  assert all(h["query"].shape[0] == 2 for h in halves)
  assert not np.array_equal(halves[0]["query"], halves[1]["query"])


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(k_max=6), "more than k_max"),
    (dict(batch_size=3), "split"),
  ],
)
def test_bad_settings(tables, overrides, match):
  with pytest.raises(ValueError, match=match):
    latents.make_latent_pipeline(
      tables, _config(**overrides), 0.0, 1.0, *((0, 2) if "batch_size" in overrides else ())
    )


def test_no_weighted_task(tables):
  config = _config()
  for name in config.task_weights:
    config.task_weights[name] = 0.0
  with pytest.raises(ValueError, match="No positive task weight"):
    latents.make_latent_pipeline(tables, config, 0.0, 1.0)
