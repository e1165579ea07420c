"""Released J-DiT weights give the released PyTorch outputs (fixtures in tests/fixtures/jdit)."""

import pathlib
import subprocess
import sys

import einops
import jax
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from lavin_jax.convert import jdit as convert_jdit
from lavin_jax.convert import load_released_jdit
from lavin_jax.io import bundle
from lavin_jax.models import jdit

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "jdit"
STATE = FIXTURES / "dit_state.safetensors"
TOL = 1e-4  # max abs error, float32


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(hidden_size=96, depth=2, num_heads=4, num_kv_heads=2))
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def io():
  return dict(np.load(FIXTURES / "dit_io.npz"))


@pytest.fixture(scope="module")
def scanned():
  return load_released_jdit(STATE, _config())


def _latents(tokens):
  """Released patchified input (B, T, h, w, (ph pw C)) -> our latents (B, T, H, W, C)."""
  return einops.rearrange(tokens, "b t h w (ph pw c) -> b t (h ph) (w pw) c", ph=2, pw=2)


def _channels_last(video):
  return einops.rearrange(video, "b c t h w -> b t h w c")


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - b)))


@pytest.mark.parametrize("case", ["fwdA", "fwdB"])
def test_forward_matches_released(io, scanned, case):
  module, params = scanned
  v = jax.jit(module.apply)(
    {"params": params}, _latents(io[f"{case}_x"]), io[f"{case}_t"], _latents(io[f"{case}_cond"])
  )
  assert v.dtype == np.float32
  assert _max_err(v, _channels_last(io[f"{case}_out"])) < TOL


def test_guided_matches_released(io, scanned):
  # The released forward_with_cfg runs the cond branch on the first half of its batch and
  # the null branch on the second half.
  module, params = scanned
  x, cond, cond_null = (_channels_last(io[k]) for k in ("cfg_x", "cfg_cond", "cfg_cond_null"))
  b = cond.shape[0]
  guided = jax.jit(module.apply, static_argnames="method")(
    {"params": params},
    x[:b],
    io["cfg_t"][:b],
    cond,
    cond_null,
    io["cfg_scale"],
    x_null=x[b:],
    method="forward_with_cfg",
  )
  ref = _channels_last(io["cfg_out"])
  assert _max_err(guided, ref[:b]) < TOL and _max_err(guided, ref[b:]) < TOL


def test_unscanned_layout_matches_released(io, scanned):
  module, params = load_released_jdit(STATE, _config(scan_layers=False, remat_policy="none"))
  assert "blocks_1" in params and "blocks" not in params
  jax.tree.map(np.testing.assert_array_equal, jdit.scan_params(params, 2), scanned[1])
  v = jax.jit(module.apply)(
    {"params": params}, _latents(io["fwdA_x"]), io["fwdA_t"], _latents(io["fwdA_cond"])
  )
  assert _max_err(v, _channels_last(io["fwdA_out"])) < TOL


def test_defaults_are_the_released_model():
  c = convert_jdit.released_config(_config())
  assert c.sandwich_norm and c.patch_size == 2 and c.in_channels == 16
  assert c.dtype == "float32" and c.hidden_size == 96
  with pytest.raises(ValueError, match="missing"):
    convert_jdit.released_config(ml_collections.ConfigDict(dict(hidden_size=96)))
  with pytest.raises(ValueError, match="Unknown J-DiT config fields"):
    convert_jdit.released_config(_config(hidden=3))


def test_missing_file():
  with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
    load_released_jdit("/nowhere.safetensors", _config())


def test_incompatible_file_lists_every_problem(tmp_path):
  state = load_file(STATE)
  state.pop("blocks.1.x_mlp.up_proj.weight")
  state["blocks.0.extra.weight"] = np.zeros(3, np.float32)
  state["final_layer.linear.bias"] = np.zeros(7, np.float32)
  path = tmp_path / "bad.safetensors"
  save_file(state, path)
  with pytest.raises(ValueError) as error:
    load_released_jdit(path, _config())
  message = str(error.value)
  assert "missing (1): ['blocks.1.x_mlp.up_proj.weight']" in message
  assert "unexpected (1): ['blocks.0.extra.weight']" in message
  assert "final_layer.linear.bias: stored (7,), model (64,)" in message


def test_wrong_config_is_refused():
  # A deeper model misses blocks.2; wrong head counts mismatch the kv projections.
  with pytest.raises(ValueError, match=r"missing \(\d+\): \['blocks.2"):
    load_released_jdit(STATE, _config(depth=3))
  with pytest.raises(
    ValueError,
    match=r"joint_attn.cond_k.weight: stored \(48, 96\), model "
    r"\(96, 96\)",
  ):
    load_released_jdit(STATE, _config(num_kv_heads=4))


def test_convert_command_writes_a_bundle(tmp_path, scanned):
  root = pathlib.Path(__file__).parents[1]
  out = tmp_path / "bundle"
  subprocess.run(
    [
      sys.executable,
      str(root / "launch" / "convert.py"),
      f"--dit_path={STATE}",
      "--size=tiny",
      f"--output={out}",
    ],
    check=True,
    capture_output=True,
  )
  config, params = bundle.load_bundle(out)
  assert config.jdit.hidden_size == 96 and config.jdit.num_kv_heads == 2
  assert params["stvae"] is None
  jax.tree.map(np.testing.assert_array_equal, params["jdit"], scanned[1])


def test_bfloat16_file_loads_into_float32_params(tmp_path, scanned):
  import ml_dtypes  # pylint: disable=g-import-not-at-top

  state = {k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(STATE).items()}
  path = tmp_path / "bf16.safetensors"
  save_file(state, path)
  _, params = load_released_jdit(path, _config())
  rounded = jax.tree.map(lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float32), scanned[1])
  assert {a.dtype for a in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  jax.tree.map(np.testing.assert_array_equal, params, rounded)
