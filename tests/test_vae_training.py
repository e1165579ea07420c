"""ST-VAE training: every loss term against an independent computation, the discriminator
step, the EMA, remat, batches by frame count, init_from, the checks and the config file.

The weights are random (tiny_vae.random_params: no init compile); LPIPS runs on the
deterministic VGG16 weights of the metric fixtures, built in memory (tiny_vae.lpips_params).
"""

import functools
import os
import pathlib
import subprocess
import sys
import types

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import safetensors.numpy
import tiny_vae

from lavin_jax.configs import train_vae as train_vae_configs
from lavin_jax.convert import stvae as convert_stvae
from lavin_jax.eval import lpips as lpips_lib
from lavin_jax.io import bundle
from lavin_jax.models import discriminator
from lavin_jax.models import stvae
from lavin_jax.parallel import mesh as mesh_lib
from lavin_jax.train import checkpoint
from lavin_jax.train import state as state_lib
from lavin_jax.train import vae
from lavin_jax.train import vae_data
from lavin_jax.train import vae_init
from lavin_jax.train import vae_report

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 16


def _video(frames, batch=2, seed=0):
  """Pixels (batch, frames, 16, 16, 3) in [-1, 1]."""
  return jnp.asarray(
    np.stack([c["video"] for c in tiny_vae.clips(batch, frames, SIZE, seed)]) / 127.5 - 1.0,
    jnp.float32,
  )


def _f64(x):
  return np.asarray(x, np.float64)


def _assert_trees_close(got, want, rel=1e-5):
  """Each leaf within `rel` of the leaf's largest magnitude."""
  for (path, g), w in zip(
    jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
  ):
    g, w = _f64(g), _f64(w)
    assert np.abs(g - w).max() <= rel * max(np.abs(w).max(), 1e-12), jax.tree_util.keystr(path)


def _with_last_layer(params, kernel):
  decoder = dict(params["decoder"])
  decoder["conv_out"] = dict(decoder["conv_out"], kernel=kernel)
  return dict(params, decoder=decoder)


@pytest.fixture(scope="module")
def vae_params():
  model = stvae.STVAE(tiny_vae.config().model)
  return tiny_vae.random_params(model, jnp.zeros((1, 1, SIZE, SIZE, 3)))


@pytest.fixture(scope="module")
def disc_params():
  c = tiny_vae.config()
  disc = discriminator.PatchDiscriminator(c.disc_channels, c.disc_layers, c.disc_temporal)
  return tiny_vae.random_params(disc, jnp.zeros((1, 1, SIZE, SIZE, 3)), seed=1)


@pytest.fixture(scope="module")
def lpips_params():
  return tiny_vae.lpips_params()


# ---------------------------------------------------------------------------------------
# The loss terms.


def _kl(mean, logvar):
  return np.mean(0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar, axis=(1, 2, 3, 4)))


def test_reconstruction_and_kl_terms_match_numpy(vae_params):
  config = tiny_vae.config(mse_weight=0.7, l1_weight=0.3, kl_weight=1e-2)
  model = stvae.STVAE(config.model)
  video, key = _video(5), jax.random.key(3)
  metrics, recon, grads = jax.jit(
    functools.partial(vae.loss_and_grads, model=model, disc=None, lpips=None, config=config)
  )(vae_params, {}, {}, video, key, 0)

  def total(p):  # the same loss through plain autodiff
    r, m, lv = model.apply({"params": p}, video, key)
    kl = jnp.mean(0.5 * jnp.sum(m**2 + jnp.exp(lv) - 1 - lv, axis=(1, 2, 3, 4)))
    return 0.7 * jnp.mean((r - video) ** 2) + 0.3 * jnp.mean(jnp.abs(r - video)) + 1e-2 * kl

  outputs, want_grads = jax.jit(
    lambda p: (model.apply({"params": p}, video, key), jax.grad(total)(p))
  )(vae_params)
  r, mean, logvar = (_f64(a) for a in outputs)
  x = _f64(video)
  np.testing.assert_allclose(recon, r, rtol=1e-5, atol=1e-5)
  want = {"mse": np.mean((r - x) ** 2), "l1": np.mean(np.abs(r - x)), "kl": _kl(mean, logvar)}
  want["loss"] = 0.7 * want["mse"] + 0.3 * want["l1"] + 1e-2 * want["kl"]
  for name, value in want.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)
  assert "generator" not in metrics and "lpips" not in metrics
  _assert_trees_close(grads, want_grads)


def test_adversarial_term_with_the_adaptive_weight(vae_params, disc_params):
  config = tiny_vae.config(adv_weight=0.5, disc_start=3)
  model, disc = vae.make_models(config)
  video, key = _video(1), jax.random.key(4)
  loss_fn = jax.jit(
    functools.partial(vae.loss_and_grads, model=model, disc=disc, lpips=None, config=config)
  )

  def terms(p):  # (rec, kl, gan) written out
    r, m, lv = model.apply({"params": p}, video, key)
    kl = jnp.mean(0.5 * jnp.sum(m**2 + jnp.exp(lv) - 1 - lv, axis=(1, 2, 3, 4)))
    return jnp.mean((r - video) ** 2), kl, -jnp.mean(disc.apply({"params": disc_params}, r))

  by_hand = jax.jit(
    jax.value_and_grad(
      lambda p, w: (lambda t: (t[0] + 1e-3 * t[1] + w * t[2], t))(terms(p)), has_aux=True
    )
  )
  (_, (rec, kl, gan)), no_gan = by_hand(vae_params, 0.0)
  _, with_gan = by_hand(vae_params, 1.0)
  # lambda = adv_weight * clip(|d rec / dW| / (|d gan / dW| + 1e-4), 0, 1e4), W the last
  # conv; the KL does not reach W.
  last = lambda grads: _f64(functools.reduce(lambda t, k: t[k], vae.LAST_LAYER, grads))
  ratio = np.linalg.norm(last(no_gan)) / (np.linalg.norm(last(with_gan) - last(no_gan)) + 1e-4)
  lam = 0.5 * np.clip(ratio, 0, 1e4)
  for step, weight in ((2, 0.0), (3, lam)):  # off before disc_start
    metrics, _, grads = loss_fn(vae_params, disc_params, {}, video, key, step)
    (loss, _), want_grads = by_hand(vae_params, weight)
    np.testing.assert_allclose(metrics["adv_weight"], weight, rtol=1e-5)
    np.testing.assert_allclose(metrics["generator"], gan, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], rec + 1e-3 * kl + weight * gan, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    _assert_trees_close(grads, want_grads)


def test_adaptive_weight_closed_form():
  config = tiny_vae.config()
  rec = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # norm 5
  np.testing.assert_allclose(
    vae.adaptive_weight(rec, {"a": jnp.array([0.0, 2.0])}, config), 5 / (2 + 1e-4), rtol=1e-6
  )
  np.testing.assert_allclose(vae.adaptive_weight(rec, {"a": jnp.zeros(2)}, config), 1e4)  # clip
  grad = jax.grad(lambda g: vae.adaptive_weight(rec, g, config))({"a": jnp.array([1.0, 2.0])})
  np.testing.assert_array_equal(grad["a"], 0.0)  # held fixed


def test_lpips_term_and_report_equal_eval_lpips(lpips_params):
  config = tiny_vae.config(mse_weight=0.0, lpips_weight=0.7)
  video = _video(5)
  recon = video * 0.8 + 0.05
  module = lpips_lib.LPIPS()
  loss, metrics = jax.jit(functools.partial(vae.reconstruction_loss, lpips=module, config=config))(
    recon, video, lpips_params
  )
  frames = lambda x: np.asarray(x).reshape((-1, SIZE, SIZE, 3))
  per_frame = _f64(jax.jit(module.apply)({"params": lpips_params}, frames(recon), frames(video)))
  assert per_frame.shape == (10,) and per_frame.min() > 0
  np.testing.assert_allclose(metrics["lpips"], per_frame.mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, 0.7 * per_frame.mean(), rtol=1e-6)
  assert set(metrics) == {"lpips"}

  distance = functools.partial(jax.jit(module.apply), {"params": lpips_params})
  scores = vae_report.report(lambda x: x * 0.8 + 0.05, {"clips": np.asarray(video)}, distance)
  np.testing.assert_allclose(scores["clips/lpips"], per_frame.mean(), rtol=1e-5)
  mse = np.mean((frames(recon) - frames(video)) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(scores["clips/psnr"], np.mean(10 * np.log10(4 / mse)), rtol=1e-5)
  assert 0 < scores["clips/ssim"] < 1
  table = vae_report.format_report(scores, 7).splitlines()
  assert table[1].split() == ["source", "psnr", "ssim", "lpips"]
  assert table[2].split()[0] == "clips" and len(table[2].split()) == 4


def test_hinge_discriminator_loss_matches_numpy():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(2, 1, 3, 3, 1)), rng.normal(size=(2, 1, 3, 3, 1))
  want = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
  np.testing.assert_allclose(vae.hinge_discriminator_loss(real, fake), want, rtol=1e-6)


def test_discriminator_step_matches_hinge_loss_and_adamw_by_hand(disc_params):
  config = tiny_vae.config(adv_weight=0.5)
  _, disc = vae.make_models(config)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  real, fake = _video(5, seed=0), _video(5, seed=1)
  update = jax.jit(functools.partial(vae.discriminator_update, disc=disc, tx=tx))
  params, opt_state, loss = update(disc_params, tx.init(disc_params), real, fake, True)

  apply = jax.jit(disc.apply)
  real_logits, fake_logits = (_f64(apply({"params": disc_params}, x)) for x in (real, fake))
  np.testing.assert_allclose(
    loss,
    np.mean(np.maximum(0, 1 - real_logits)) + np.mean(np.maximum(0, 1 + fake_logits)),
    rtol=1e-6,
  )

  def hinge(p):
    return jnp.mean(jnp.maximum(0.0, 1.0 - disc.apply({"params": p}, real))) + jnp.mean(
      jnp.maximum(0.0, 1.0 + disc.apply({"params": p}, fake))
    )

  o = config.optimizer
  by_hand = optax.chain(
    optax.clip_by_global_norm(o.clip_norm),
    optax.adamw(o.lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
  )
  updates, _ = by_hand.update(
    jax.jit(jax.grad(hinge))(disc_params), by_hand.init(disc_params), disc_params
  )
  _assert_trees_close(params, optax.apply_updates(disc_params, updates), rel=1e-6)
  assert (
    max(
      np.abs(_f64(a) - _f64(b)).max()
      for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(disc_params), strict=True)
    )
    > 1e-4
  )

  same, same_opt, _ = update(disc_params, tx.init(disc_params), real, fake, False)
  jax.tree.map(np.testing.assert_array_equal, same, disc_params)
  jax.tree.map(np.testing.assert_array_equal, same_opt, tx.init(disc_params))


def test_train_step_ema_and_discriminator_start(vae_params, disc_params):
  config = tiny_vae.config(ema_decay=0.9, adv_weight=0.5, disc_start=1)
  model, disc = vae.make_models(config)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  params = jax.tree.map(jnp.asarray, vae_params)
  state = vae.VAEState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    ema_params=jax.tree.map(jnp.copy, params),
    opt_state=tx.init(params),
    disc_params=disc_params,
    disc_opt_state=tx.init(disc_params),
    rng=jax.random.PRNGKey(0),
  )
  step = jax.jit(
    functools.partial(vae.train_step, model=model, disc=disc, lpips=None, tx=tx, config=config)
  )
  history, discs = [vae_params], [disc_params]
  for i in range(3):
    state, metrics = step(state, {}, _video(1, seed=i))
    history.append(jax.device_get(state.params))
    discs.append(jax.device_get(state.disc_params))
    assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(state.step) == 3
  ema = history[0]
  for p in history[1:]:  # ema <- 0.9 ema + 0.1 params, after every update
    ema = jax.tree.map(lambda e, q: 0.9 * _f64(e) + 0.1 * _f64(q), ema, p)
  _assert_trees_close(state.ema_params, ema, rel=1e-6)
  jax.tree.map(np.testing.assert_array_equal, discs[1], discs[0])  # step 0 < disc_start
  assert not np.array_equal(discs[2]["logits"]["kernel"], discs[1]["logits"]["kernel"])


def test_model_remat_setting_rematerialises_the_step(vae_params):
  video, key = _video(1), jax.random.key(5)
  saved = {}
  for remat in (False, True):
    config = tiny_vae.config()
    config.model.remat = remat
    jaxpr = jax.make_jaxpr(
      functools.partial(
        vae.loss_and_grads, model=stvae.STVAE(config.model), disc=None, lpips=None, config=config
      )
    )(vae_params, {}, {}, video, key, 0)
    saved[remat] = str(jaxpr).count("remat") + str(jaxpr).count("checkpoint")
  assert saved[False] == 0 and saved[True] > 0


def test_optimizer_updates_exactly_as_the_former_clip_adamw_chain():
  config = train_vae_configs.get_config("tiny").optimizer
  config.lr, config.weight_decay = 1e-3, 0.01  # the demo's lr; a visible decay
  former = optax.chain(
    optax.clip_by_global_norm(config.clip_norm),
    optax.adamw(config.lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay),
  )
  tx, _ = state_lib.create_optimizer(config)
  rng = np.random.default_rng(3)
  shapes = {"conv": {"kernel": (3, 3, 3, 8, 8), "bias": (8,)}, "norm": {"scale": (8,)}}
  tree = lambda scale: jax.tree.map(
    lambda s: scale * rng.standard_normal(s, np.float32),
    shapes,
    is_leaf=lambda x: isinstance(x, tuple),
  )
  start = tree(0.1)
  grads = [tree(1.0), tree(1e-3)]  # global norms above and below clip_norm
  assert optax.tree.norm(grads[0]) > config.clip_norm > optax.tree.norm(grads[1])

  def updates(opt):
    step = jax.jit(lambda p, g, s: opt.update(g, s, p))
    params, opt_state = start, opt.init(start)
    for g in grads:
      u, opt_state = step(params, g, opt_state)
      params = optax.apply_updates(params, u)
    return jax.device_get(params)

  jax.tree.map(np.testing.assert_array_equal, updates(tx), updates(former))


# ---------------------------------------------------------------------------------------
# Batches: one frame count each, from the seed, split over processes.


def test_batches_by_frame_count_follow_the_seed_and_split_over_processes():
  config = tiny_vae.config(stage="images+clips", clip_fraction=0.5, seed=3)
  stills, clips = tiny_vae.stills(5), tiny_vae.clips(3)
  kinds = [vae_data.is_clip_step(config, s) for s in range(200)]
  assert 0.4 < np.mean(kinds) < 0.6
  assert kinds != [
    vae_data.is_clip_step(tiny_vae.config(stage="images+clips", seed=4), s) for s in range(200)
  ]
  batches = [next(it) for it in [vae_data.make_input(stills, clips, config)] for _ in range(6)]
  again = vae_data.make_input(stills, clips, config)
  whole = vae_data.Batches(stills, clips, config, 0, 1)
  halves = [vae_data.Batches(stills, clips, config, p, 2) for p in range(2)]
  for s, batch in enumerate(batches):
    assert batch.shape == (2, 5 if kinds[s] else 1, SIZE, SIZE, 3)
    assert -1.0 <= batch.min() and batch.max() <= 1.0
    np.testing.assert_array_equal(next(again), batch)
    np.testing.assert_array_equal(whole[s], batch)
    np.testing.assert_array_equal(np.concatenate([h[s] for h in halves]), batch)

  # Stills at the training size: batch s holds examples s*B ... of the shuffled order.
  still_config = tiny_vae.config(seed=5)
  stills = tiny_vae.stills(5, size=SIZE)
  order = grain.MapDataset.range(5).seed(5).shuffle().repeat()
  it = vae_data.make_input(stills, None, still_config)
  for s in range(4):
    want = [stills[order[2 * s + j]]["image"] / 127.5 - 1.0 for j in range(2)]
    np.testing.assert_allclose(next(it)[:, 0], want, atol=1e-6)
  assert not vae_data.is_clip_step(still_config, 0)


def test_sources_that_do_not_fit_are_named():
  config = tiny_vae.config(stage="images+clips")
  stills, clips = tiny_vae.stills(2), tiny_vae.clips(2, frames=4)
  with pytest.raises(ValueError, match="stage='images\\+clips' needs clips"):
    vae_data.check_sources(stills, None, config)
  with pytest.raises(ValueError, match="clips have 4 frames, fewer than config.clip_frames = 5"):
    vae_data.check_sources(stills, clips, config)
  with pytest.raises(ValueError, match="stills source yields \\['video'\\], not 'image'"):
    vae_data.check_sources(clips, clips, config)
  with pytest.raises(ValueError, match="smaller than the resolution 16"):
    vae_data.check_sources(tiny_vae.stills(2, size=8), None, tiny_vae.config())
  with pytest.raises(ValueError, match="source is empty"):
    vae_data.check_sources([], None, tiny_vae.config())


# ---------------------------------------------------------------------------------------
# Where a run starts.


def test_init_from_kinds_are_detected_or_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    vae_init.locate(str(tmp_path / "missing"))
  (tmp_path / "notes.txt").write_text("")
  for bad in (tmp_path / "notes.txt", tmp_path):
    with pytest.raises(ValueError, match="neither a released ST-VAE file.*bundle.*workdir"):
      vae_init.locate(str(bad))
  (tmp_path / "stvae.safetensors").write_text("")
  assert vae_init.locate(str(tmp_path / "stvae.safetensors"))[0] == "released"
  (tmp_path / "bundle").mkdir()
  (tmp_path / "bundle" / bundle.CONFIG_FILE).write_text("{}")
  assert vae_init.locate(str(tmp_path / "bundle")) == ("bundle", str(tmp_path / "bundle"))
  run = tmp_path / "run"
  for step in ("2", "10", "12.orbax-checkpoint-tmp-1"):
    (run / "checkpoints" / step / "state").mkdir(parents=True)
  latest = ("checkpoint", str(run / "checkpoints" / "10"))
  assert vae_init.locate(str(run)) == latest
  assert vae_init.locate(str(run / "checkpoints")) == latest
  assert vae_init.locate(str(run / "checkpoints" / "2")) == (
    "checkpoint",
    str(run / "checkpoints" / "2"),
  )


def _released_layout(params):
  """{released key: array in the PyTorch layout} of ST-VAE params."""
  flat = {}
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    x = np.asarray(x)
    if x.ndim >= 2:  # (*k, in, out) -> (out, in, *k)
      x = np.transpose(x, (x.ndim - 1, x.ndim - 2) + tuple(range(x.ndim - 2)))
    flat[convert_stvae.released_key(tuple(k.key for k in path))] = np.ascontiguousarray(x)
  return flat


def test_init_from_released_file_bundle_and_checkpoint(tmp_path, vae_params, disc_params):
  config = tiny_vae.config(ema_decay=0.5, adv_weight=0.5)
  model, disc = vae.make_models(config)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  equal = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)

  released = tmp_path / "stvae.safetensors"
  safetensors.numpy.save_file(_released_layout(vae_params), str(released))
  trees = vae_init.load(*vae_init.locate(str(released)), config.model)
  assert set(trees) == {"params"}
  equal(trees["params"], vae_params)

  bundle.save_bundle(
    tmp_path / "bundle", ml_collections.ConfigDict({"stvae": config.model}), stvae_params=vae_params
  )
  equal(
    vae_init.load(*vae_init.locate(str(tmp_path / "bundle")), config.model)["params"], vae_params
  )

  ema = jax.tree.map(lambda x: 0.5 * x, vae_params)
  earlier = {
    "step": np.int32(4),
    "params": vae_params,
    "ema_params": ema,
    "opt_state": tx.init(vae_params),
    "disc_params": disc_params,
    "disc_opt_state": tx.init(disc_params),
    "rng": np.zeros(2, np.uint32),
  }
  with checkpoint.CheckpointManager(tmp_path / "run" / "checkpoints", save_every=4) as ckpt:
    ckpt.save(4, earlier)
  trees = vae_init.load(*vae_init.locate(str(tmp_path / "run")), config.model)
  equal(trees, {"params": vae_params, "ema_params": ema, "disc_params": disc_params})

  # Released weights start the params and the EMA; the discriminator starts fresh.
  mesh = mesh_lib.create_mesh({"data": 1}, jax.devices()[:1])
  state, _ = vae.init_train_state(
    model, disc, tx, config, mesh, jax.random.PRNGKey(0), start={"params": vae_params}
  )
  equal(state.params, vae_params)
  equal(state.ema_params, vae_params)
  assert int(state.step) == 0
  assert not np.allclose(state.disc_params["logits"]["kernel"], disc_params["logits"]["kernel"])
  assert not np.any(jax.tree.leaves(state.opt_state[1][0].mu)[0])

  other = tiny_vae.config(ema_decay=0.5, adv_weight=0.5, init_from=str(released))
  other.model.block_out_channels = (8, 8, 16)
  model, disc = vae.make_models(other)
  with pytest.raises(ValueError, match="(?s)init_from.*does not fit the model.*mismatched"):
    vae.init_train_state(model, disc, tx, other, mesh, jax.random.PRNGKey(0), start=trees)


# ---------------------------------------------------------------------------------------
# Checks before any compile, and the config file.


@pytest.mark.parametrize(
  "fields, message",
  [
    ({"stage": "videos"}, "config.stage must be one of"),
    ({"resolution": 18}, "multiple of 4"),
    ({"stage": "images+clips", "clip_frames": 6}, "clip_frames must be 1 \\+ 4k"),
    ({"stage": "images+clips", "clip_fraction": 0.0}, "clip_fraction must be in \\(0, 1\\]"),
    ({"stage": "images+clips", "clip_batch_size": 0}, "clip_batch_size must be >= 1"),
    ({"mse_weight": 0.0}, "all 0"),
    ({"l1_weight": -1.0}, "must be >= 0: \\['l1_weight'\\]"),
    ({"lpips_weight": 1.0}, "needs config.lpips_vgg"),
    ({"ema_decay": 1.0}, "ema_decay must be in \\[0, 1\\)"),
    ({"adv_weight": 0.5, "disc_layers": 3}, "too small for a 3-layer PatchGAN"),
  ],
)
def test_bad_settings_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    vae.check_config(tiny_vae.config(**fields))


def test_ema_off_settings_and_batch_split_checks():
  for off in (0.0, None):
    config = tiny_vae.config(ema_decay=off)
    vae.check_config(config)
    assert not vae.ema_on(config)
  mesh = types.SimpleNamespace(shape={"data": 2, "fsdp": 2, "tensor": 1})
  vae.check_batch_sizes(tiny_vae.config(batch_size=4), mesh)
  with pytest.raises(
    ValueError, match="batch_size = 2 does not divide over 1 processes and data x fsdp = 4 devices"
  ):
    vae.check_batch_sizes(tiny_vae.config(), mesh)
  with pytest.raises(ValueError, match="clip_batch_size = 2"):
    vae.check_batch_sizes(tiny_vae.config(batch_size=4, stage="images+clips"), mesh)


def test_train_names_a_bad_start_or_source_before_compiling(tmp_path, monkeypatch):
  def compile_(*args, **kwargs):
    raise AssertionError("compiled before the error")

  monkeypatch.setattr(vae, "init_train_state", compile_)  # the first compile of a run
  monkeypatch.setattr(vae, "create_train_step", compile_)
  config = tiny_vae.config(init_from=str(tmp_path / "nothing_here"))
  with pytest.raises(FileNotFoundError, match="init_from .*nothing_here.* does not exist"):
    vae.train(config, str(tmp_path / "run"), tiny_vae.stills(2))
  with pytest.raises(ValueError, match="config.source is empty"):
    vae.train(tiny_vae.config(), str(tmp_path / "run"))
  with pytest.raises(ValueError, match="needs clips: set config.clip_source"):
    vae.train(tiny_vae.config(stage="images+clips"), str(tmp_path / "run"), tiny_vae.stills(2))


@pytest.mark.parametrize("arg", ["demo", "tiny", "small", "released", ""])
def test_config_file_settings(arg):
  config = train_vae_configs.get_config(arg)
  if config.lpips_weight > 0:  # the weight files are the user's to give
    config.lpips_vgg, config.lpips_lin = "vgg16.pth", "lin.pth"
  vae.check_config(config)
  assert config.resolution % stvae.spatial_factor(config.model) == 0
  assert config.source.startswith("synthetic")
  config.stage = "images+clips"
  vae.check_config(config)


def test_config_file_rejects_unknown_setting():
  with pytest.raises(ValueError, match="Unknown config argument 'huge'"):
    train_vae_configs.get_config("huge")


def test_launcher_names_a_bad_stage_in_one_line(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "launch" / "train_vae.py"),
      f"--config={ROOT / 'lavin_jax' / 'configs' / 'train_vae.py'}:tiny",
      "--config.stage=videos",
      f"--workdir={tmp_path}",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 1
  assert "error: config.stage must be one of ('images', 'images+clips'), got 'videos'" in (
    proc.stderr
  )
  assert "Traceback" not in proc.stderr
