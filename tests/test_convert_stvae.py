"""Reading the released ST-VAE checkpoint: key mapping, formats, and every bad checkpoint."""

import pathlib
import sys

import flax.linen as nn
import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file
import torch_files

from lavin_jax import configs
from lavin_jax.convert import load_released_stvae
from lavin_jax.convert import stvae as convert_stvae
from lavin_jax.io import torch_checkpoint
from lavin_jax.models import stvae

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "stvae"
STATE = FIXTURES / "vae_state.pt"


def _config(**fields):
  c = ml_collections.ConfigDict(
    dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=16)
  )
  c.update(fields)
  return c


@pytest.fixture(scope="module")
def state():
  return torch_checkpoint.load_state_dict(STATE)  # its "state_dict" entry


def _save_pt(path, state_dict):
  return torch_files.save({"state_dict": state_dict}, path)


def test_every_parameter_is_filled_in_flax_layout(state):
  module, params = load_released_stvae(STATE, _config())
  expected = nn.unbox(
    jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 1, 8, 8, 3), np.float32))["params"]
  )
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  assert len(jax.tree.leaves(params)) == len(state)
  # Spot checks of the layout change (out, in, *k) -> (*k, in, out).
  w = state["encoder.down_blocks.1.resnets.0.conv2.conv.weight"]
  np.testing.assert_array_equal(
    params["encoder"]["down_blocks_1"]["resnets_0"]["conv2"]["kernel"], w.transpose(2, 3, 4, 1, 0)
  )
  w = state["decoder.up_blocks.0.upsamplers.0.conv.weight"]
  np.testing.assert_array_equal(
    params["decoder"]["up_blocks_0"]["upsamplers_0"]["kernel"], w.transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
    params["decoder"]["norm_out"]["norm_layer"]["scale"],
    state["decoder.norm_out.norm_layer.weight"],
  )
  assert module.config.norm_num_groups == 32 and module.config.tile_frames == 129


def test_released_keys_of_the_released_size():
  """The released model's own names, including the shortcut convs the fixture lacks."""
  module = stvae.STVAE(configs.stvae("released"))
  params = nn.unbox(
    jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 1, 8, 8, 3), np.float32))["params"]
  )
  keys = {
    convert_stvae.released_key(tuple(k.key for k in path))
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  assert "encoder.down_blocks.1.resnets.0.conv_shortcut.weight" in keys
  assert "decoder.up_blocks.1.resnets.0.conv_shortcut.bias" in keys
  assert "decoder.up_blocks.3.resnets.3.norm2.conv_b.conv.weight" in keys
  assert "encoder.down_blocks.2.downsamplers.0.conv.bias" in keys
  assert "decoder.up_blocks.3.upsamplers.0.conv.weight" not in keys
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(params))
  assert abs(n - 215.6e6) < 0.1e6  # SPEC: 215.6M parameters


def test_safetensors_gives_the_same_params(state, tmp_path):
  path = tmp_path / "stvae.safetensors"
  save_file(state, path)
  _, from_pt = load_released_stvae(STATE, _config())
  _, from_st = load_released_stvae(path, _config())
  jax.tree.map(np.testing.assert_array_equal, from_st, from_pt)


def test_plain_state_dict_and_bfloat16(state, tmp_path):
  path = tmp_path / "plain.pt"
  torch_files.save({k: v.astype(ml_dtypes.bfloat16) for k, v in state.items()}, path)
  _, params = load_released_stvae(path, _config(param_dtype="bfloat16"))
  kernel = params["encoder"]["conv_in"]["kernel"]
  assert kernel.dtype == jax.numpy.bfloat16
  want = state["encoder.conv_in.conv.weight"].astype(ml_dtypes.bfloat16).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(kernel, np.float32), want.transpose(2, 3, 4, 1, 0))


def test_missing_unexpected_and_mismatched_keys_are_listed(state, tmp_path):
  bad = dict(state)
  del bad["encoder.conv_in.conv.bias"]
  bad["encoder.mid_block.resnets.2.norm1.weight"] = np.zeros(32, np.float32)
  bad["decoder.conv_out.conv.weight"] = np.zeros((3, 32, 3, 3, 1), np.float32)
  with pytest.raises(ValueError) as e:
    load_released_stvae(_save_pt(tmp_path / "bad.pt", bad), _config())
  message = str(e.value)
  assert "missing (1): ['encoder.conv_in.conv.bias']" in message
  assert "unexpected (1): ['encoder.mid_block.resnets.2.norm1.weight']" in message
  assert "mismatched shapes (1): ['decoder.conv_out.conv.weight" in message


def test_wrong_config_is_reported(tmp_path):
  with pytest.raises(ValueError, match="does not fit the model.*block_out_channels"):
    load_released_stvae(STATE, _config(layers_per_block=2))


def test_keys_outside_the_model_are_skipped(state, tmp_path):
  extra = dict(state)
  extra["loss.discriminator.main.0.weight"] = np.zeros((4, 3, 4, 4), np.float32)
  _, params = load_released_stvae(_save_pt(tmp_path / "extra.pt", extra), _config())
  assert len(jax.tree.leaves(params)) == len(state)


def test_config_fields():
  with pytest.raises(ValueError, match="missing \\['layers_per_block'\\]"):
    load_released_stvae(
      STATE,
      ml_collections.ConfigDict(dict(block_out_channels=(32, 32, 32, 32), latent_channels=16)),
    )
  with pytest.raises(ValueError, match="Unknown ST-VAE config fields \\['tile_px'\\]"):
    load_released_stvae(STATE, _config(tile_px=4))


def test_bad_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match="No ST-VAE checkpoint"):
    load_released_stvae(tmp_path / "nope.pt", _config())
  (tmp_path / "weights.npz").write_bytes(b"")
  with pytest.raises(ValueError, match="Unknown checkpoint format"):
    load_released_stvae(tmp_path / "weights.npz", _config())


def test_pickled_code_is_refused(tmp_path):
  path = tmp_path / "evil.pt"
  config_dict = torch_files.Call(torch_files.Global("ml_collections", "ConfigDict"))
  torch_files.save({"state_dict": {"x": config_dict}}, path)
  with pytest.raises(
    torch_checkpoint.TorchCheckpointError,
    match=r"evil.pt refers to the global ml_collections.ConfigDict",
  ):
    load_released_stvae(path, _config())


def test_released_checkpoint_is_read_without_torch(state, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
  _, params = load_released_stvae(STATE, _config())
  assert len(jax.tree.leaves(params)) == len(state)
