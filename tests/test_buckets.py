"""Context-size buckets: padding of J-DiT tokens, K's distribution, one shape per step."""

import numpy as np
import pytest

from lavin_jax.configs import data as data_configs
from lavin_jax.data import buckets
from lavin_jax.data import pipeline


def _config(k_buckets=(), k_min=1, k_max=8, batch_size=4):
  c = data_configs.pipeline("image")
  c.resolution, c.batch_size = 32, batch_size
  c.k_min, c.k_max, c.k_buckets = k_min, k_max, k_buckets
  c.read_threads, c.read_buffer_size = 1, 4
  for name in c.task_weights:
    c.task_weights[name] = float(name == "colorization")
  return c


def _closed_form(slots_of, k_min=1, k_max=8):
  """Padding share of J-DiT tokens, K uniform: each K's 2 s + 2 clips, 2 (s - K) padded."""
  ks = range(k_min, k_max + 1)
  return sum(2 * (slots_of(k) - k) for k in ks) / sum(2 * slots_of(k) + 2 for k in ks)


def test_padding_fraction_of_the_default_range_is_under_a_tenth():
  assert buckets.padding_fraction(_config()) == 0.0 < 0.10
  # Every episode padded to 8: sum(2 (8 - K)) / (8 * 18) = 56 / 144.
  assert buckets.padding_fraction(_config((8,))) == pytest.approx(56 / 144)
  assert buckets.padding_fraction(_config((8,))) == pytest.approx(_closed_form(lambda k: 8))
  even = lambda k: k + k % 2  # Buckets (2, 4, 6, 8).
  assert buckets.padding_fraction(_config((2, 4, 6))) == pytest.approx(_closed_form(even))
  powers = lambda k: 1 << (k - 1).bit_length()  # Buckets (1, 2, 4, 8).
  assert buckets.padding_fraction(_config((1, 2, 4))) == pytest.approx(_closed_form(powers))
  assert _closed_form(powers) > 0.1 > _closed_form(even)  # 14 / 102 and 8 / 96


@pytest.mark.parametrize("k_buckets", [(), (2, 4, 6), (8,)])
def test_draws_keep_k_uniform_and_each_batch_one_size(k_buckets):
  config = _config(k_buckets)
  edges = buckets.bounds(config)
  sampler = buckets.Sampler(config, batch_size=4, seed=3)
  draws = np.array([sampler(q, np.random.default_rng(q)) for q in range(16_000)])
  k, slots = draws[:, 0], draws[:, 1]
  frequencies = np.bincount(k, minlength=9)[1:] / len(k)
  np.testing.assert_allclose(frequencies, 1 / 8, atol=0.02)  # 4000 batches: ~4 sigma
  assert np.all(slots.reshape(-1, 4) == slots.reshape(-1, 4)[:, :1])  # one size a batch
  below = np.array([0] + list(edges))[np.searchsorted(edges, slots)]  # previous bound
  assert np.all((below < k) & (k <= slots))
  fake = [{"context_inputs": np.zeros((4, s)), "num_pairs": n} for s, n in _batches(draws)]
  measured = buckets.measured_padding_fraction(fake)
  assert measured == pytest.approx(buckets.padding_fraction(config), abs=0.02)


def _batches(draws):
  for batch in draws.reshape(-1, 4, 2):
    yield batch[0, 1], batch[:, 0]


def test_bad_bounds_are_named():
  with pytest.raises(ValueError, match=r"k_buckets \(0, 4\) holds \[0\], outside"):
    pipeline.make_pipeline(_config((0, 4)), _source(), 0, 1)
  with pytest.raises(ValueError, match=r"holds \[9\]"):
    buckets.bounds(_config((9,)))
  assert buckets.bounds(_config((4, 2))) == (2, 4, 8)
  assert buckets.bounds(_config((), k_min=2, k_max=4)) == (2, 3, 4)


def _source(n=12):
  return [{"image": np.full((32, 32, 3), 20 * i, np.uint8)} for i in range(n)]


def test_processes_pad_each_step_to_one_size_and_resume():
  config = _config()
  dataset = [pipeline.make_pipeline(config, _source(), p, 2) for p in range(2)]
  iterators = [iter(d) for d in dataset]
  for _ in range(3):
    next(iterators[0]), next(iterators[1])
  state = iterators[0].get_state()
  steps = [(next(iterators[0]), next(iterators[1])) for _ in range(8)]
  sizes = set()
  for a, b in steps:
    size = a["context_inputs"].shape[1]
    assert b["context_inputs"].shape[1] == size  # both processes, one compiled shape
    assert np.all(a["num_pairs"] == size) and np.all(b["num_pairs"] == size)
    sizes.add(size)
  assert len(sizes) > 2
  assert buckets.measured_padding_fraction(x for step in steps for x in step) == 0.0
  resumed = iter(dataset[0])
  resumed.set_state(state)
  for a, _ in steps:
    got = next(resumed)
    for key in a:
      np.testing.assert_array_equal(a[key], got[key], err_msg=key)


def test_unbucketed_pipeline_pads_to_k_max():
  config = _config((8,), batch_size=2)
  batches = [b for b, _ in zip(pipeline.make_pipeline(config, _source(), 0, 1), range(6))]
  assert all(b["context_inputs"].shape[1] == 8 for b in batches)
  assert buckets.measured_padding_fraction(batches) > 0.1
