"""J-DiT training: loss, optimizer, EMA, context dropout, padding, released gradients."""

import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import types

import flax.linen as nn
import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import numpy as np
import pytest

from lavin_jax import configs
from lavin_jax.configs import train_dit as train_dit_config
from lavin_jax.models import incontext
from lavin_jax.models import jdit
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import dit
from lavin_jax.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "jdit")
STVAE_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "stvae", "vae_state.pt")  # tiny


@pytest.fixture(scope="module", autouse=True)
def persistent_compilation_cache(tmp_path_factory):
  """A persistent compilation cache for this module: programs that recur (the step of
  a resumed run, the overfitting step in `train`) compile once."""
  options = {
    "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax_cache")),
    "jax_persistent_cache_min_compile_time_secs": 0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
  }
  previous = {name: jax.config.values[name] for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  yield
  for name, value in previous.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def tiny_config(**model):
  """A J-DiT far smaller than 'tiny' (fast to compile on CPU), float32, latents given.

  One unscanned layer: compile time dominates these tests; the scanned layout is
  trained in test_sharding.py.
  """
  c = train_dit_config.get_config("tiny,runlocal")
  c.input = "latents"
  c.model.update(
    dict(
      hidden_size=32,
      depth=1,
      num_heads=2,
      num_kv_heads=1,
      scan_layers=False,
      remat_policy="none",
      dtype="float32",
    )
  )
  c.model.update(model)
  return c


def latent_batch(rng, batch=2, pairs=2, frames=1, size=4, num_pairs=None, channels=32):
  """Random clips in the batch layout; pairs >= num_pairs are zero (padding).

  channels=32: posterior moments (mean | logvar), the trainer's input='latents'
  batches; 16: J-DiT latents.
  """
  shape = (batch, pairs, frames, size, size, channels)
  b = {
    "context_inputs": rng.standard_normal(shape, np.float32),
    "context_targets": rng.standard_normal(shape, np.float32),
    "query": rng.standard_normal((batch,) + shape[2:], np.float32),
    "target": rng.standard_normal((batch,) + shape[2:], np.float32),
  }
  num_pairs = np.full((batch,), pairs, np.int32) if num_pairs is None else num_pairs
  valid = (np.arange(pairs)[None] < num_pairs[:, None])[..., None, None, None, None]
  for k in ("context_inputs", "context_targets"):
    b[k] = np.where(valid, b[k], 0).astype(np.float32)
  b["num_pairs"] = np.asarray(num_pairs, np.int32)
  return b


def setup_training(config):
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  state, shardings = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  step = dit.create_train_step(model, tx, schedule, config, shardings)
  return mesh, state, step


def training_config():
  """The config of the training-loop tests (one compiled step between them)."""
  config = tiny_config()
  config.optimizer.lr = 3e-3
  config.optimizer.ema_decay = 0.9  # visible in a single step (test_train_step_ema)
  config.flow.uncond_ratio = 0.0
  return config


@jax.jit
def init_params(x, t, cond, mask):
  return jdit.JDiT(tiny_config().model).init(jax.random.PRNGKey(0), x, t, cond, mask)["params"]


@jax.jit
def velocity(params, x, t, cond, mask=None):
  return jdit.JDiT(tiny_config().model).apply({"params": params}, x, t, cond, mask)


@jax.jit
def loss_at(params, x, noise, t, cond, mask):
  return dit.velocity_loss(jdit.JDiT(tiny_config().model), params, x, noise, t, cond, mask, 0.1)


@pytest.fixture(scope="module")
def overfit_run():
  """150 updates on one fixed batch: (losses, the last step's states and step fn)."""
  mesh, state, step = setup_training(training_config())
  losses = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    batch = mesh_lib.global_batch(latent_batch(np.random.default_rng(0)), mesh)
    for _ in range(150):
      # Step counter held at 0: the same times, noise and dropout every update, so the
      # batch is fixed entirely (the optimizer keeps its own count).
      state, metrics = step(state.replace(step=jnp.zeros_like(state.step)), None, batch)
      losses.append(float(metrics["loss"]))
    before = jax.device_get(state)
    after, _ = step(state, None, batch)
  return losses, before, jax.device_get(after)


# ---------------------------------------------------------------------------------------
# 1. Overfitting.


def test_tiny_model_overfits_one_fixed_batch(overfit_run):
  losses = overfit_run[0]
  assert np.all(np.isfinite(losses))
  assert losses[-1] * 10 <= losses[0], (losses[0], losses[-1])


# ---------------------------------------------------------------------------------------
# 4. Loss, clipping + AdamW and EMA against numpy.


def test_velocity_loss_matches_numpy():
  rng = np.random.default_rng(1)
  b = latent_batch(rng, batch=3, channels=16)
  cond, mask = incontext.build_condition(
    b["context_inputs"], b["context_targets"], b["query"], b["num_pairs"], np.zeros(3, bool)
  )
  x, noise = b["target"], rng.standard_normal(b["target"].shape, np.float32)
  t = np.array([0.1, 0.5, 0.93], np.float32)
  params = init_params(x, t, cond, mask)
  loss = loss_at(params, x, noise, t, cond, mask)

  x_t = t[:, None, None, None, None] * x + (1 - t[:, None, None, None, None]) * noise
  v = np.asarray(velocity(params, x_t, t, cond, mask), np.float64)
  err = v - (x - noise)
  per_example = (err**2).mean(axis=(1, 2, 3, 4)) + 0.1 * np.abs(err).mean(axis=(1, 2, 3, 4))
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-5)


def numpy_adamw_clipped(params, grads_seq, lr, b1, b2, eps, wd, clip):
  """Reference: global-norm clip, then PyTorch-style AdamW (decoupled weight decay)."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  s = {k: np.zeros_like(v) for k, v in p.items()}
  for i, grads in enumerate(grads_seq, start=1):
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values()))
    scale = min(1.0, clip / norm)
    for k in p:
      g = grads[k] * scale
      m[k] = b1 * m[k] + (1 - b1) * g
      s[k] = b2 * s[k] + (1 - b2) * g * g
      m_hat, s_hat = m[k] / (1 - b1**i), s[k] / (1 - b2**i)
      p[k] = p[k] - lr * (m_hat / (np.sqrt(s_hat) + eps) + wd * p[k])
  return p


def test_clipped_adamw_matches_numpy():
  config = tiny_config().optimizer
  config.lr = 0.05  # large enough that every term of the update is visible
  tx, schedule = state_lib.create_optimizer(config)
  rng = np.random.default_rng(2)
  params = {"a": rng.standard_normal((5, 3), np.float32), "b": rng.standard_normal(7, np.float32)}
  # Gradient norms far above (clipped) and below (untouched) the clip norm 1.0.
  grads_seq = [
    {k: (scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    for scale in (30.0, 0.01, 5.0)
  ]
  state = state_lib.create_train_state(params, tx, jax.random.PRNGKey(0))
  for grads in grads_seq:
    state, _ = state_lib.apply_gradients(state, grads, tx, config.ema_decay)
  want = numpy_adamw_clipped(
    params,
    grads_seq,
    config.lr,
    config.b1,
    config.b2,
    config.eps,
    config.weight_decay,
    config.clip_norm,
  )
  for k in params:
    np.testing.assert_allclose(state.params[k], want[k], rtol=1e-5, atol=1e-6)
  assert float(schedule(10_000)) == pytest.approx(config.lr)  # constant, no warmup


def test_train_step_ema_matches_numpy(overfit_run):
  _, before, after = overfit_run
  want = jax.tree.map(
    lambda e, p: 0.9 * e + 0.1 * np.asarray(p, np.float64), before.ema_params, after.params
  )
  jax.tree.map(
    lambda got, w: np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7), after.ema_params, want
  )
  assert int(after.step) == int(before.step) + 1


def test_ema_update_matches_numpy():
  rng = np.random.default_rng(7)
  ema, params = ({"w": rng.standard_normal((4, 3), np.float32)} for _ in range(2))
  got = state_lib.ema_update(ema, params, 0.9999)
  np.testing.assert_allclose(got["w"], 0.9999 * ema["w"] + 0.0001 * params["w"], rtol=1e-6)


def test_schedules_and_bad_names():
  config = tiny_config().optimizer
  config.schedule, config.warmup_steps, config.decay_steps = "cosine", 10, 110
  _, schedule = state_lib.create_optimizer(config)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(config.lr)
  assert float(schedule(60)) == pytest.approx(config.lr / 2, rel=1e-4)
  config.schedule = "linear_wobble"
  with pytest.raises(ValueError, match="optimizer.schedule"):
    state_lib.create_optimizer(config)


# ---------------------------------------------------------------------------------------
# 5. Context dropout.


def test_context_drop_rate_is_uncond_ratio():
  config = tiny_config()
  n = 40_000
  b = {k: jnp.ones((n, 1, 1, 2, 2, 1)) for k in ("context_inputs", "context_targets")}
  b.update({k: jnp.ones((n, 1, 2, 2, 1)) for k in ("query", "target")})
  _, _, _, cond, mask = dit.sample_training_inputs(
    b, jnp.ones((n,), jnp.int32), jax.random.PRNGKey(4), config.flow
  )
  dropped = ~np.asarray(mask[:, 1])  # the first pair's target frame is hidden
  rate, p = dropped.mean(), config.flow.uncond_ratio
  assert abs(rate - p) <= 3 * np.sqrt(p * (1 - p) / n), rate
  # Dropped examples see exactly [zero frame, query]; the others everything.
  assert np.all(np.asarray(mask)[dropped] == [True, False, True])
  assert np.all(np.asarray(mask)[~dropped])
  assert not np.any(np.asarray(cond)[dropped, 0]) and np.all(np.asarray(cond)[~dropped, 0])


def test_dropped_context_gives_null_condition_velocity():
  rng = np.random.default_rng(5)
  b = latent_batch(rng, batch=2, pairs=3, frames=2, channels=16)
  cond, mask = incontext.build_condition(
    b["context_inputs"], b["context_targets"], b["query"], b["num_pairs"], np.ones(2, bool)
  )
  x, t = b["target"], np.array([0.3, 0.8], np.float32)
  params = init_params(x, t, cond, mask)
  v_dropped = velocity(params, x, t, cond, mask)
  v_null = velocity(params, x, t, jdit.null_condition(b["query"]))
  np.testing.assert_allclose(v_dropped, v_null, atol=2e-5)


# ---------------------------------------------------------------------------------------
# 6. Padded context pairs.


def test_padding_to_eight_pairs_matches_true_pairs():
  rng = np.random.default_rng(6)
  alone = latent_batch(rng, batch=1, pairs=3, channels=16)
  padded = latent_batch(rng, batch=1, pairs=8, num_pairs=np.array([3]), channels=16)
  for k in ("context_inputs", "context_targets"):
    padded[k][:, :3] = alone[k]
    # Garbage in the padding: masking, not zeros, must hide it.
    padded[k][:, 3:] = rng.standard_normal(padded[k][:, 3:].shape)
  for k in ("query", "target"):
    padded[k] = alone[k]
  noise = rng.standard_normal(alone["target"].shape, np.float32)
  t = np.array([0.6], np.float32)
  no_drop = np.zeros(1, bool)

  def run(b, params=None):
    cond, mask = incontext.build_condition(
      b["context_inputs"], b["context_targets"], b["query"], b["num_pairs"], no_drop
    )
    if params is None:
      params = init_params(b["target"], t, cond, mask)
    x_t = t[:, None, None, None, None] * b["target"] + (1 - t) * noise
    v = velocity(params, x_t, t, cond, mask)
    loss = loss_at(params, b["target"], noise, t, cond, mask)
    return params, v, loss

  params, v_alone, loss_alone = run(alone)
  _, v_padded, loss_padded = run(padded, params)
  assert padded["context_inputs"].shape[1] == 8
  np.testing.assert_allclose(v_padded, v_alone, atol=2e-5)
  np.testing.assert_allclose(loss_padded, loss_alone, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# 7. Gradients through the released weights.


def test_loss_and_gradients_match_released():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  from lavin_jax.convert import jdit as convert_jdit  # pylint: disable=g-import-not-at-top

  arch = ml_collections.ConfigDict(dict(hidden_size=96, depth=2, num_heads=4, num_kv_heads=2))
  module, params = convert_jdit.load_released_jdit(
    os.path.join(FIXTURES, "dit_state.safetensors"), arch
  )
  io = np.load(os.path.join(FIXTURES, "dit_io.npz"))
  channels_last = lambda a: np.moveaxis(a, 1, -1)  # (B, C, T, H, W) -> (B, T, H, W, C)
  x, noise, cond = (channels_last(io[k]) for k in ("loss_x1", "loss_x0", "loss_cond"))
  loss, grads = jax.jit(
    jax.value_and_grad(
      lambda p: dit.velocity_loss(module, p, x, noise, io["loss_t"], cond, None, 0.1)
    )
  )(params)
  np.testing.assert_allclose(loss, io["loss_value"], rtol=1e-5)

  released = load_file(os.path.join(FIXTURES, "dit_grads.safetensors"))
  checked = 0
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    names = tuple(k.key for k in path)
    layers = range(g.shape[0]) if names[0] == "blocks" else [None]
    for layer in layers:
      ours = np.asarray(g if layer is None else g[layer])
      key = convert_jdit.released_key(names, layer)
      if key not in released:  # no gradient in PyTorch: unused, so ours must be zero
        np.testing.assert_array_equal(ours, 0, err_msg=key)
        continue
      want = released[key].T if names[-1] == "kernel" else released[key]
      # float32 through two blocks; the largest difference measured was 1.1e-8.
      np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-6, err_msg=key)
      checked += 1
  assert checked == len(released)


# ---------------------------------------------------------------------------------------
# 8. The training loop: non-finite steps, checkpoints, resume.


def test_non_finite_loss_stops_keeps_checkpoint_resume_and_sigterm(tmp_path):
  from lavin_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  config = training_config()
  config.total_steps, config.checkpoint_every = 6, 2
  rng = np.random.default_rng(8)
  good = [latent_batch(rng) for _ in range(6)]
  poisoned = good[:4] + [dict(good[4], target=np.full_like(good[4]["target"], np.nan))]
  with pytest.raises(
    FloatingPointError, match=r"Step 5: loss is nan.*last good checkpoint is step 4"
  ):
    dit.train(config, str(tmp_path), batches=iter(poisoned))
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 4 and all(np.isfinite(json.loads(line)["loss"]) for line in lines)
  with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=2) as ckpt:
    assert ckpt.all_steps() == [2, 4]

  # The run resumes from step 4; a SIGTERM while step 5 loads its batch saves step 5
  # (off the save_every grid) and ends the run cleanly.
  def terminated_during_step_5():
    os.kill(os.getpid(), signal.SIGTERM)
    yield good[4]
    yield good[5]

  state = dit.train(config, str(tmp_path), batches=terminated_during_step_5())
  assert int(state.step) == 5
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state.params)))
  steps = [
    json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
  ]
  assert steps == [1, 2, 3, 4, 5]
  with checkpoint.CheckpointManager(tmp_path / "checkpoints", save_every=2) as ckpt:
    assert ckpt.all_steps() == [2, 4, 5]
  keys = set(json.loads(lines[0]))
  assert {
    "loss",
    "grad_norm",
    "param_norm",
    "update_norm",
    "lr",
    "examples_per_sec",
    "tokens_per_sec",
  } <= keys


def test_bad_config_and_batches_raise_before_compile(tmp_path):
  config = tiny_config()
  config.input, config.vae_random_init = "pixels", False
  with pytest.raises(ValueError, match="vae_checkpoint"):
    dit.check_config(config, batches_given=True)
  config.input = "latents"  # encoded up front from the configured data: needs the VAE
  with pytest.raises(ValueError, match="vae_checkpoint"):
    dit.check_config(config)
  dit.check_config(config, batches_given=True)  # latents supplied: no VAE needed
  config.vae_checkpoint = str(tmp_path / "missing.pt")
  with pytest.raises(FileNotFoundError, match="missing.pt"):
    dit.check_config(config)
  config = tiny_config()
  config.data.resolution = 40  # the released ST-VAE (8x) and 2x2 patches need 16s
  with pytest.raises(ValueError, match="resolution must be a positive multiple of 16"):
    dit.check_config(config, batches_given=True)
  config = tiny_config()
  batch = latent_batch(np.random.default_rng(9))
  with pytest.raises(ValueError, match="num_pairs must lie in"):
    dit.check_batch(dict(batch, num_pairs=np.array([0, 2], np.int32)), config)
  with pytest.raises(ValueError, match="Batch shapes"):
    dit.check_batch(dict(batch, query=batch["query"][..., :3]), config)
  with pytest.raises(ValueError, match="lacks"):
    dit.check_batch({k: v for k, v in batch.items() if k != "target"}, config)


def test_bad_accumulation_evaluation_and_profile_settings_raise_before_compile():
  config = tiny_config()  # runlocal: a global batch of 2, one device here
  config.grad_accum_steps = 4
  with pytest.raises(ValueError, match=r"global batch 2 does not split into grad_accum_steps = 4"):
    dit.check_config(config)
  config.data.batch_size = 4  # splits into 4, but not over 2 data-parallel devices
  with pytest.raises(
    ValueError,
    match=r"global batch 4 does not split into grad_accum_steps = 4 microbatches over "
    r"data x fsdp = 2 devices \(needs a multiple of 8\)",
  ):
    dit.check_batch_split(config, types.SimpleNamespace(shape={"data": 2, "fsdp": 1}))
  config.data.batch_size = 2
  with pytest.raises(ValueError, match=r"global batch 12 .* grad_accum_steps = 4 .* = 2 dev"):
    dit.check_accumulation(12, 4, 2)
  dit.check_accumulation(16, 4, 2)
  # Given batches are checked as the step is traced, before it compiles.
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  abstract, _ = dit.abstract_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  step = functools.partial(dit.train_step, model=model, tx=tx, schedule=schedule, config=config)
  with pytest.raises(ValueError, match="global batch 6 does not split into grad_accum_steps = 4"):
    jax.eval_shape(step, abstract, None, latent_batch(np.random.default_rng(0), batch=6))
  config = tiny_config()
  config.grad_accum_steps = 0
  with pytest.raises(ValueError, match="config.grad_accum_steps must be >= 1, got 0"):
    dit.check_config(config)
  config = tiny_config()
  config.eval_seed = config.data.seed
  with pytest.raises(ValueError, match=r"config.eval_seed \(0\) equals config.data.seed"):
    dit.check_config(config)
  config = tiny_config()
  config.eval_times = (0.5, 1.5)
  with pytest.raises(ValueError, match="config.eval_times must be a non-empty tuple"):
    dit.check_config(config, batches_given=True)
  config = tiny_config()
  config.profile_steps = (4, 30)  # runlocal: 10 steps
  with pytest.raises(ValueError, match=r"profile_steps must be .* <= total_steps \+ 1 = 11"):
    dit.check_config(config, batches_given=True)


def test_gradient_accumulation_gives_the_large_batch_update():
  """One step on 32 examples in 4 microbatches of 8 == one step on all 32 at once:
  the per-example draws (posterior sample, context dropout, time, noise) are made for
  the whole batch before the split."""
  config = training_config()
  config.flow.uncond_ratio = 0.5  # context dropout drawn per example, in both
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  state, shardings = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  rng = np.random.default_rng(15)
  local = latent_batch(rng, batch=32, num_pairs=rng.integers(1, 3, 32).astype(np.int32))
  results = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    batch = mesh_lib.global_batch(local, mesh)
    for steps in (1, 4):
      config.grad_accum_steps = steps
      step = dit.create_train_step(model, tx, schedule, config, shardings)
      results.append(jax.device_get(step(jax.tree.map(jnp.copy, state), None, batch)))
  (whole, whole_metrics), (accumulated, accumulated_metrics) = results
  # AdamW's first moment is (1 - b1) x the clipped gradient: compared directly.
  close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=1e-8)
  jax.tree.map(close, accumulated.opt_state, whole.opt_state)
  jax.tree.map(close, accumulated.params, whole.params)
  jax.tree.map(close, accumulated.ema_params, whole.ema_params)
  for name in ("loss", "grad_norm", "update_norm"):
    close(accumulated_metrics[name], whole_metrics[name], err_msg=name)


def test_eval_loss_is_a_fixed_function_of_the_params(tmp_path):
  """eval_loss logged by `train` == the mean of `velocity_loss` at each eval time over
  the held-out batches, recomputed from the final params, and the same on every call."""
  config = training_config()
  config.total_steps = config.checkpoint_every = config.eval_every = 2
  config.eval_batches, config.eval_times = 2, (0.2, 0.9)
  rng = np.random.default_rng(16)
  held_out = [latent_batch(rng, num_pairs=np.array([1, 2], np.int32)) for _ in range(2)]
  train_batches = iter([latent_batch(rng) for _ in range(2)])
  state = dit.train(config, str(tmp_path), batches=train_batches, eval_batches=held_out)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [("eval_loss" in r) for r in logged] == [False, True]

  params = jax.device_get(state.params)
  assert config.flow.l1_weight == 0.1  # as in loss_at
  want = []
  for i, batch in enumerate(held_out):
    k_vae, k_noise = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.eval_seed), i))
    latents = dit.sample_batch(batch, k_vae, config.vae)
    cond, mask = incontext.build_condition(
      latents["context_inputs"],
      latents["context_targets"],
      latents["query"],
      batch["num_pairs"],
      np.zeros(2, bool),
    )
    x = latents["target"]
    noise = jax.random.normal(k_noise, (2,) + x.shape)
    for j, t in enumerate(config.eval_times):
      want.append(float(loss_at(params, x, noise[j], np.full(2, t, np.float32), cond, mask)))
  assert logged[1]["eval_loss"] == pytest.approx(np.mean(want), rel=1e-5)

  mesh = mesh_lib.create_mesh({"data": -1})
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    batches = [mesh_lib.global_batch(b, mesh) for b in held_out]
    eval_fn = dit.create_eval_fn(jdit.JDiT(config.model), config, batches, None, mesh)
    first, second = (float(eval_fn(state)["eval_loss"]) for _ in range(2))
    config.grad_accum_steps = 2  # the evaluation splits its batches as the step does
    split = dit.create_eval_fn(jdit.JDiT(config.model), config, batches, None, mesh)(state)
  assert first == second == logged[1]["eval_loss"]
  assert float(split["eval_loss"]) == pytest.approx(first, rel=1e-6)


def test_pixel_batches_encode_each_clip_separately():
  from lavin_jax.models import stvae  # pylint: disable=g-import-not-at-top

  vae_config = configs.stvae("tiny")
  vae = stvae.STVAE(vae_config)
  rng = np.random.default_rng(10)
  pixels = lambda *shape: rng.uniform(-1, 1, shape + (1, 16, 16, 3)).astype(np.float32)
  batch = {
    "context_inputs": pixels(2, 2),
    "context_targets": pixels(2, 2),
    "query": pixels(2),
    "target": pixels(2),
  }
  params = jax.jit(functools.partial(vae.init, method="encode"))(
    jax.random.PRNGKey(0), batch["query"]
  )["params"]  # the encoder is all training needs
  encode = jax.jit(lambda b: dit.encode_batch(vae, params, b, jax.random.PRNGKey(1), vae_config))
  latents = encode(batch)
  assert latents["context_inputs"].shape == (2, 2, 1, 2, 2, 16)
  assert latents["target"].shape == (2, 1, 2, 2, 16)
  # Changing one context clip changes its latent only: no clip sees another.
  changed = dict(batch, context_inputs=batch["context_inputs"].copy())
  changed["context_inputs"][1, 0] = pixels(1)[0]
  again = encode(changed)
  moved = np.abs(np.asarray(again["context_inputs"]) - np.asarray(latents["context_inputs"]))
  assert moved[1, 0].max() > 1e-3 and moved[0].max() == 0 and moved[1, 1].max() == 0
  for key in ("context_targets", "query", "target"):
    np.testing.assert_array_equal(again[key], latents[key])


def test_frozen_encoder_in_bfloat16_stays_within_tolerance_of_float32():
  """config.vae_dtype: the bf16 posterior means of photographs within 3 % (relative L2)."""
  from lavin_jax.data import episodes  # pylint: disable=g-import-not-at-top
  from lavin_jax.data import specs  # pylint: disable=g-import-not-at-top
  from lavin_jax.io import pixels  # pylint: disable=g-import-not-at-top

  assert train_dit_config.get_config("0.1b").vae_dtype == "bfloat16"
  config = train_dit_config.get_config("tiny,runlocal")  # float32: CPU
  config.vae_random_init = False
  config.vae_checkpoint = STVAE_FIXTURE
  photos = specs.get_source("photos")
  clips = np.stack([episodes.fit_example(photos[i], 32)["image"] for i in range(len(photos))])
  clips = pixels.to_float(clips)[:, None]  # (N, 1, 32, 32, 3)
  means = {}
  for dtype in ("bfloat16", "float32"):
    config.vae_dtype = dtype
    vae, params = dit.load_vae(config)
    assert vae.config.dtype == dtype
    means[dtype] = np.asarray(
      jax.jit(functools.partial(vae.apply, method="encode"))({"params": params}, clips)[0]
    )
  error = means["bfloat16"] - means["float32"]
  assert 0 < np.linalg.norm(error) / np.linalg.norm(means["float32"]) < 0.03


def test_stored_moments_take_the_pixel_path_after_the_encoder():
  """sample_batch of the ST-VAE's moments == encode_batch of the pixels, draw for draw."""
  from lavin_jax.models import stvae  # pylint: disable=g-import-not-at-top

  vae_config = configs.stvae("tiny")
  vae = stvae.STVAE(vae_config)
  rng = np.random.default_rng(12)
  pixels = lambda *shape: rng.uniform(-1, 1, shape + (5, 16, 16, 3)).astype(np.float32)
  batch = {
    "context_inputs": pixels(2, 2),
    "context_targets": pixels(2, 2),
    "query": pixels(2),
    "target": pixels(2),
  }
  params = jax.jit(functools.partial(vae.init, method="encode"))(
    jax.random.PRNGKey(0), batch["query"]
  )["params"]
  moments_of = jax.jit(
    lambda x: jnp.concatenate(vae.apply({"params": params}, x, method="encode"), axis=-1)
  )
  stored = {
    key: moments_of(x.reshape((-1,) + x.shape[-4:])).reshape(x.shape[:-4] + (2, 2, 2, 32))
    for key, x in batch.items()
  }
  key = jax.random.PRNGKey(3)
  want = jax.jit(lambda b: dit.encode_batch(vae, params, b, key, vae_config))(batch)
  got = jax.jit(lambda b: dit.sample_batch(b, key, vae_config))(stored)
  for name in want:
    assert got[name].shape == want[name].shape == stored[name].shape[:-1] + (16,)
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # A sure posterior (log-variance -30) gives the normalised mean.
  sure = {
    k: jnp.concatenate([v[..., :16], jnp.full_like(v[..., 16:], -30.0)], -1)
    for k, v in stored.items()
  }
  mean = stvae.normalize_latents(stored["query"][..., :16], vae_config)
  np.testing.assert_allclose(dit.sample_batch(sure, key, vae_config)["query"], mean, atol=1e-5)


def test_batches_of_two_frame_counts_compile_once_each():
  mesh, state, step = setup_training(training_config())
  rng = np.random.default_rng(13)
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    for frames in (1, 2, 1, 2, 1):
      batch = mesh_lib.global_batch(latent_batch(rng, frames=frames), mesh)
      state, metrics = step(state, None, batch)
      assert np.isfinite(float(metrics["loss"]))
  assert step._cache_size() == 2  # pylint: disable=protected-access


def _mixture_config(tmp_path):
  """Stills and clips of the synthetic data set, trained from stored latents."""
  config = training_config()
  config.vae = configs.stvae("tiny")
  config.vae_random_init = True
  config.sources = {
    "scenes": f"synthetic:tiny,content=images,data_dir={tmp_path / 'data'}",
    "clips": f"synthetic:tiny,content=clips,data_dir={tmp_path / 'data'}",
  }
  for name in config.data.task_weights:
    weight = {"colorization": 1.0, "depth_estimation": 1.0, "video_depth": 2.0}.get(name, 0.0)
    config.data.task_weights[name] = weight
  config.data.resolution, config.data.batch_size, config.data.k_max = 32, 2, 2
  config.data.read_threads = 1
  config.latents.dir = str(tmp_path / "latents")
  config.latents.examples_per_shard, config.latents.batch_size = 3, 4
  config.total_steps, config.checkpoint_every = 4, 2
  config.eval_every = 2  # held-out batches of the configured input (seed eval_seed)
  return config


def test_mixture_of_stills_and_clips_trains_and_resumes_exactly(tmp_path):
  config = _mixture_config(tmp_path)
  straight = dit.train(config, str(tmp_path / "straight"))
  assert sorted(os.listdir(tmp_path / "latents")) == ["clips", "scenes", "settings.json"]
  batches = dit.make_input(config, str(tmp_path / "straight"))
  assert {next(batches)["query"].shape[1] for _ in range(4)} == {1, 2}  # T' of 1 and 5 frames

  config.total_steps = 2
  dit.train(config, str(tmp_path / "resumed"))
  config.total_steps = 4
  resumed = dit.train(config, str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)
  data = [tmp_path / run / "checkpoints" / "4" / "data" for run in ("straight", "resumed")]
  states = [sorted(p.read_text() for p in d.iterdir() if p.suffix == ".json") for d in data]
  assert states[0] and states[0] == states[1]
  records = [
    [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    for run in ("straight", "resumed")
  ]
  for name in ("loss", "eval_loss"):  # the held-out batches are drawn again on resume
    logged = [[r[name] for r in run if name in r] for run in records]
    assert logged[0] == logged[1] and len(logged[0]) == (4 if name == "loss" else 2), name


def test_pixel_trainer_on_its_own_grain_pipeline_resumes_exactly(tmp_path):
  """`train` with the configured pixel source: cut at step 3, resumed, equal to a straight run."""
  config = tiny_config()  # the runlocal config: photographs, the tiny ST-VAE
  config.input = "pixels"
  config.vae_random_init = False  # its weights from a file: no compiled init
  config.vae_checkpoint = STVAE_FIXTURE
  config.data.resolution, config.data.read_threads = 32, 1
  config.total_steps, config.checkpoint_every = 6, 3
  assert config.optimizer.schedule == "constant"  # the cut leaves the schedule alone
  straight = dit.train(config, str(tmp_path / "straight"))
  config.total_steps = 3
  dit.train(config, str(tmp_path / "resumed"))
  config.total_steps = 6
  resumed = dit.train(config, str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.ema_params, straight.ema_params)
  data = [tmp_path / run / "checkpoints" / "6" / "data" for run in ("straight", "resumed")]
  states = [sorted(p.read_text() for p in d.iterdir() if p.suffix == ".json") for d in data]
  assert states[0] and states[0] == states[1]


def _corrupt_pixel_input(skip):
  """The runlocal data config, colorization of 12 constant images, example 5 all NaN."""
  from lavin_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  config.input = "pixels"
  config.data.resolution, config.data.batch_size, config.data.read_threads = 32, 2, 1
  config.data.k_min = config.data.k_max = 2
  config.data.skip_nonfinite = skip
  for name in config.data.task_weights:
    config.data.task_weights[name] = float(name == "colorization")
  source = [{"image": np.full((32, 32, 3), 20 * i, np.uint8)} for i in range(12)]
  source[5] = {"image": np.full((32, 32, 3), np.nan, np.float32)}
  return config, iter(pipeline.make_pipeline(config.data, source, 0, 1))


def test_nonfinite_example_stops_naming_step_and_example_or_is_skipped(caplog):
  from lavin_jax.data import episodes  # pylint: disable=g-import-not-at-top

  mesh = mesh_lib.create_mesh({"data": -1})
  config, local = _corrupt_pixel_input(skip=False)
  batches = dit.global_batches(local, config, mesh, first_step=7)
  steps = 0
  with pytest.raises(episodes.NonFiniteExampleError) as error:
    for _ in range(12):  # an epoch: example 5 is drawn
      next(batches)
      steps += 1
  assert str(error.value).startswith(f"Step {7 + steps}: Source 'source' example 5 (")
  assert "skip_nonfinite" in str(error.value) and "\n" not in str(error.value)

  config, local = _corrupt_pixel_input(skip=True)
  for batch in itertools.islice(dit.global_batches(local, config, mesh), 12):
    assert all(np.isfinite(np.asarray(batch[k])).all() for k in dit.CLIP_KEYS)
  _, again = _corrupt_pixel_input(skip=True)
  skipped = sum(int(next(again)["skipped"].sum()) for _ in range(12))
  logged = [r.getMessage() for r in caplog.records if "skipped so far" in r.getMessage()]
  assert skipped and logged[-1].endswith(f": {skipped} examples with NaN or inf skipped so far.")


def test_init_from_released_weights():
  from lavin_jax.convert import jdit as convert_jdit  # pylint: disable=g-import-not-at-top

  config = tiny_config(hidden_size=96, depth=2, num_heads=4, num_kv_heads=2, scan_layers=True)
  config.init_from = os.path.join(FIXTURES, "dit_state.safetensors")
  model = jdit.JDiT(config.model)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  state, _ = dit.init_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  _, want = convert_jdit.load_released_jdit(config.init_from, config.model)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), want)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema_params), want)
  assert int(state.step) == 0


def _dot_dtypes(jaxpr):
  """Operand dtypes of every matmul (dot_general) in a jaxpr and its sub-jaxprs; the
  float32 sums of norm and scale gradients (layers._dot_sum) are reductions, not
  matmuls, and are left out."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general" and "dot_sum" not in str(eqn.source_info.name_stack):
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if hasattr(sub, "jaxpr") or hasattr(sub, "eqns"):
          found += _dot_dtypes(getattr(sub, "jaxpr", sub))
  return found


def test_bf16_compute_with_float32_master_weights():
  config = tiny_config(dtype="bfloat16")
  model = jdit.JDiT(config.model)
  tx, schedule = state_lib.create_optimizer(config.optimizer)
  mesh = mesh_lib.create_mesh({"data": -1})
  abstract, _ = dit.abstract_train_state(model, tx, config, mesh, jax.random.PRNGKey(0))
  batch = latent_batch(np.random.default_rng(11))
  step = functools.partial(dit.train_step, model=model, tx=tx, schedule=schedule, config=config)
  traced = jax.make_jaxpr(step, return_shape=True)(abstract, None, batch)
  dots = _dot_dtypes(traced[0].jaxpr)
  # Forward and backward matmuls of the model run in bfloat16 ...
  assert sum(d == ("bfloat16", "bfloat16") for d in dots) >= 0.9 * len(dots), dots
  # ... while params, EMA, optimizer moments and the loss stay float32.
  new_state, metrics = traced[1]
  assert {x.dtype for x in jax.tree.leaves((new_state.params, new_state.ema_params))} == {
    np.dtype("float32")
  }
  assert {x.dtype for x in jax.tree.leaves(new_state.opt_state) if x.ndim} == {np.dtype("float32")}
  assert metrics["loss"].dtype == np.float32


def test_config_argument_parsing():
  config = train_dit_config.get_config("3.4b")
  assert config.model.hidden_size == 2304 and config.model.dtype == "bfloat16"
  assert config.data.k_max == 8 and config.optimizer.lr == 1e-4
  assert config.optimizer.ema_decay == 0.9999 and config.flow.uncond_ratio == 0.1
  with pytest.raises(ValueError, match="Unknown config argument '2b'"):
    train_dit_config.get_config("2b")
  with pytest.raises(ValueError, match="Unknown config flags"):
    train_dit_config.get_config("tiny,fast")


def test_paper_mixture_config():
  from lavin_jax.configs import data as data_configs  # pylint: disable=g-import-not-at-top
  from lavin_jax.configs import tasks as task_table  # pylint: disable=g-import-not-at-top

  config = train_dit_config.get_config("0.1b,paper")
  assert sorted(config.sources) == sorted(data_configs.PAPER_DATA_SETS)
  weights = dict(config.data.task_weights)
  assert set(weights) == set(task_table.TASK_NAMES)
  for name, weight in weights.items():
    assert weight == data_configs.PAPER_EXAMPLES.get(name, 0), name
  assert weights["foreground_segmentation"] == 0 and weights["depth_estimation"] == 1_281_167
  config.vae_random_init = True
  with pytest.raises(ValueError, match="config.sources holds no source spec"):
    dit.check_config(config)  # the paper's data sets are named, not given


def test_launcher_rejects_bad_config_before_training(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "launch", "train_dit.py"),
      "--config=" + os.path.join(ROOT, "lavin_jax", "configs", "train_dit.py") + ":tiny,runlocal",
      "--config.input=voxels",
      f"--workdir={tmp_path}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode != 0
  assert "error: config.input must be one of ('pixels', 'latents'), got 'voxels'" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "checkpoints").exists()
