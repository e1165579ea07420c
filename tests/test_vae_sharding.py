"""ST-VAE training on 8 devices equals 1 device: one full update (reconstruction, KL,
adaptive adversarial term, discriminator step, EMA) on a clip batch.

Runs this file as a script in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (as tests/test_sharding.py). The
8-device mesh is data=2 x fsdp=2 x tensor=2: clips split over data x fsdp, the ST-VAE's
conv kernels split their output channels over fsdp (FSDP) where fsdp divides them, the
discriminator is replicated. Tolerance as for J-DiT: float32 sums in another order.
The test's AdamW has eps = 1, so its first step is nearly linear in the gradient (with
the default eps a tiny gradient is divided by about its own size, and its rounding
decides the update's sign).
"""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np

from lavin_jax.parallel import mesh as mesh_lib

P = jax.sharding.PartitionSpec


def test_rules_for_the_stvae_and_its_discriminator():
  to_mesh = lambda names: nn.logical_to_mesh_axes(names, mesh_lib.AXIS_RULES)
  assert to_mesh((None, None, None, "conv_in", "conv_out")) == P(None, None, None, None, "fsdp")
  assert to_mesh((None, None, None, "disc_in", "disc_out")) == P(None, None, None, None, None)
  assert to_mesh(("norm",)) == P(None)


def test_fit_shardings_keeps_undivided_dimensions_whole():
  mesh = jax.sharding.AbstractMesh((1, 2, 1), mesh_lib.MESH_AXES)
  sharding = lambda *spec: jax.sharding.NamedSharding(mesh, P(*spec))
  shapes = {
    "even": jax.ShapeDtypeStruct((3, 8), np.float32),
    "odd": jax.ShapeDtypeStruct((8, 3), np.float32),
  }
  fitted = mesh_lib.fit_shardings(
    {"even": sharding(None, "fsdp"), "odd": sharding(None, "fsdp")}, shapes
  )
  assert fitted["even"].spec == P(None, "fsdp")
  assert fitted["odd"].spec == P(None, None)


def test_eight_devices_match_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["init_max_abs_diff"] == 0.0  # the sharded init draws the same weights
  assert result["specs"]["encoder/conv_in/kernel"] == str(P(None, None, None, None, "fsdp"))
  whole = str(P(None, None, None, None, None))
  assert result["specs"]["decoder/conv_out/kernel"] == whole  # 3 channels
  assert result["specs"]["disc/conv_0/kernel"] == whole
  assert result["batch_spec"] == str(P(("data", "fsdp")))
  for name, (one, eight) in result["metrics"].items():
    np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-7, err_msg=name)
  assert result["metrics"]["adv_weight"][0] > 0 and result["metrics"]["disc_loss"][0] > 0
  for tree in ("params", "ema_params", "disc_params"):
    assert result["max_abs_diff"][tree] < 1e-6, tree
    assert result["max_abs_update"][tree] > 1e-4, tree  # the step did move them


# ---------------------------------------------------------------------------------------
# Subprocess: one update on a 1-device mesh and on a data=2, fsdp=2, tensor=2 mesh.


def _one_step(config, mesh, local_batch):
  from lavin_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import vae  # pylint: disable=g-import-not-at-top

  model, disc = vae.make_models(config)
  tx, _ = state_lib.create_optimizer(config.optimizer)
  state, shardings = vae.init_train_state(model, disc, tx, config, mesh, jax.random.PRNGKey(0))
  step = vae.create_train_step(model, disc, None, tx, config, shardings)
  specs = {
    "/".join(k.key for k in p): str(x.sharding.spec)
    for p, x in jax.tree_util.tree_leaves_with_path(state.params)
  }
  specs.update(
    {
      "disc/" + "/".join(k.key for k in p): str(x.sharding.spec)
      for p, x in jax.tree_util.tree_leaves_with_path(state.disc_params)
    }
  )
  before = jax.device_get(state)
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.AXIS_RULES):
    batch = mesh_lib.global_batch(local_batch, mesh)
    new_state, metrics = step(state, {}, batch)
  return (
    before,
    jax.device_get(new_state),
    jax.device_get(metrics),
    specs,
    str(batch.sharding.spec),
  )


def _main():
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import tiny_vae  # pylint: disable=g-import-not-at-top

  config = tiny_vae.config(adv_weight=0.5, disc_start=0, ema_decay=0.9, l1_weight=0.5, batch_size=4)
  config.optimizer.lr, config.optimizer.eps = 0.1, 1.0
  clips = np.stack([c["video"][:5, :16, :16] for c in tiny_vae.clips(4)])
  local = clips.astype(np.float32) / 127.5 - 1.0
  one = _one_step(config, mesh_lib.create_mesh({"data": 1}, jax.devices()[:1]), local)
  eight = _one_step(config, mesh_lib.create_mesh({"data": 2, "fsdp": 2, "tensor": 2}), local)
  diff = lambda a, b: max(
    float(np.abs(np.asarray(x, np.float64) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )
  trees = ("params", "ema_params", "disc_params")
  print(
    json.dumps(
      {
        "devices": jax.device_count(),
        "init_max_abs_diff": diff(one[0], eight[0]),
        "metrics": {k: [float(one[2][k]), float(eight[2][k])] for k in one[2]},
        "max_abs_diff": {t: diff(getattr(one[1], t), getattr(eight[1], t)) for t in trees},
        "max_abs_update": {t: diff(getattr(one[0], t), getattr(one[1], t)) for t in trees},
        "specs": eight[3],
        "batch_spec": eight[4],
      }
    )
  )


if __name__ == "__main__":
  _main()
