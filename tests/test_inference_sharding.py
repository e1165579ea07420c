"""A pipeline sharded over 8 devices predicts what it predicts on one device.

Runs this file as a script in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed when the
backend starts), as tests/test_sharding.py does. Float32 compute; sharded matmuls sum in
another order, so predictions agree to 1e-5. Meshes: data x fsdp (batch padded to 8
rows), fsdp x tensor (what a model too big for one device gets) and data x fsdp x tensor
(2 each, where XLA mis-partitions a matmul unless the kernel is gathered over fsdp:
`lavin_jax.models.layers`). The tiny model's weights are random, modulations included, so
a prediction that mixed examples would show.
"""

import json
import os
import subprocess
import sys

import numpy as np

SIZE = 32


def test_sharded_pipeline_matches_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900, check=False
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["one_device"] == [1, 1, 1]
  assert result["given"] == [2, 4, 1]
  # Too big for one device (a limit faked small): tensor parallel over the 2 kv heads,
  # FSDP over the other 4 devices.
  assert result["auto_too_big"] == [1, 4, 2]
  assert result["kernel_shard_fraction"] == 1 / 8  # (embed, mlp) over fsdp x tensor
  assert result["three_axes"] == [2, 2, 2]
  for name in ("given", "auto_too_big", "three_axes"):
    assert result[f"{name}_max_diff"] < 1e-5, result


def _main():
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import jax  # pylint: disable=g-import-not-at-top
  import tiny_model  # pylint: disable=g-import-not-at-top

  from lavin_jax.inference import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from lavin_jax.inference import placement  # pylint: disable=g-import-not-at-top

  config = tiny_model.tiny_model_config()
  rng = np.random.default_rng(0)
  images = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)
  ctx_in, ctx_tgt = images(3, 2, 1, SIZE, SIZE, 3), images(3, 2, 1, SIZE, SIZE, 3)
  query = images(3, 1, SIZE, SIZE, 3)

  def run(mesh_axes=None):
    pipe = pipeline_lib.Pipeline(config, *tiny_model.tiny_model_params(config), mesh_axes)
    prediction = pipe(ctx_in, ctx_tgt, query, seed=3, num_steps=3)
    return pipe, prediction

  one, want = run()
  result = {"one_device": list(one.mesh.devices.shape)}
  given, got = run({"data": 2, "fsdp": 4})
  result["given"] = list(given.mesh.devices.shape)
  result["given_max_diff"] = float(np.abs(got - want).max())
  three, got = run({"data": 2, "fsdp": 2, "tensor": 2})
  result["three_axes"] = list(three.mesh.devices.shape)
  result["three_axes_max_diff"] = float(np.abs(got - want).max())
  placement.device_limit = lambda device: 1000  # every model is too big for one device
  auto, got = run()
  result["auto_too_big"] = list(auto.mesh.devices.shape)
  result["auto_too_big_max_diff"] = float(np.abs(got - want).max())
  kernel = auto.jdit_params["blocks_0"]["x_mlp"]["gate_proj"]["kernel"]
  result["kernel_shard_fraction"] = kernel.addressable_shards[0].data.size / kernel.size
  assert jax.device_count() == 8
  print(json.dumps(result))


if __name__ == "__main__":
  _main()
