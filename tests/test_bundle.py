"""Inference bundles: round trip, dtype, replacement, atomicity, errors."""

import os
from unittest import mock

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lavin_jax import configs
from lavin_jax.io import bundle


def _config():
  return ml_collections.ConfigDict({"jdit": configs.jdit("tiny"), "stvae": configs.stvae("tiny")})


def _params(seed):
  rng = np.random.default_rng(seed)
  return {
    "blocks": {"kernel": rng.normal(size=(2, 3, 4)).astype(np.float32)},
    "embed": jnp.asarray(rng.normal(size=(1, 4)), jnp.float32),
    "count": np.arange(3, dtype=np.int32),
  }


def _assert_tree_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    if isinstance(a[k], dict):
      _assert_tree_equal(a[k], b[k])
    else:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_round_trip(tmp_path):
  path = tmp_path / "bundle"
  jdit_params, stvae_params = _params(0), _params(1)
  bundle.save_bundle(path, _config(), jdit_params, stvae_params)
  config, params = bundle.load_bundle(path)
  assert config.jdit.hidden_size == 96 and config.stvae.latent_channels == 16
  assert config.jdit.to_dict() == _config().jdit.to_dict()
  _assert_tree_equal(params["jdit"], jdit_params)
  _assert_tree_equal(params["stvae"], stvae_params)
  assert isinstance(params["jdit"]["embed"], np.ndarray)
  assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_dtype_and_single_model(tmp_path):
  path = tmp_path / "bundle"
  jdit_params = _params(0)
  bundle.save_bundle(path, _config(), jdit_params=jdit_params, dtype="bfloat16")
  _, params = bundle.load_bundle(path)
  assert params["stvae"] is None
  assert params["jdit"]["embed"].dtype == jnp.bfloat16
  assert params["jdit"]["count"].dtype == np.int32  # integers keep their dtype
  np.testing.assert_allclose(
    params["jdit"]["blocks"]["kernel"].astype(np.float32),
    jdit_params["blocks"]["kernel"],
    rtol=1e-2,
  )


def test_replaces_an_existing_bundle(tmp_path):
  path = tmp_path / "bundle"
  bundle.save_bundle(path, _config(), jdit_params=_params(0))
  bundle.save_bundle(path, _config(), stvae_params=_params(5))
  _, params = bundle.load_bundle(path)
  assert params["jdit"] is None
  _assert_tree_equal(params["stvae"], _params(5))
  assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_failed_save_keeps_the_old_bundle(tmp_path):
  path = tmp_path / "bundle"
  bundle.save_bundle(path, _config(), jdit_params=_params(0))
  with mock.patch.object(ml_collections.ConfigDict, "to_json", side_effect=OSError("disk full")):
    with pytest.raises(OSError, match="disk full"):
      bundle.save_bundle(path, _config(), jdit_params=_params(1))
  _, params = bundle.load_bundle(path)
  _assert_tree_equal(params["jdit"], _params(0))
  # The next save cleans up what the failed one left.
  bundle.save_bundle(path, _config(), jdit_params=_params(2))
  assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="No inference bundle"):
    bundle.load_bundle(tmp_path / "missing")
  with pytest.raises(ValueError, match="needs jdit_params, stvae_params"):
    bundle.save_bundle(tmp_path / "b", _config())
  with pytest.raises(ValueError, match=r"sub-configs \['stvae'\]"):
    bundle.save_bundle(
      tmp_path / "b",
      ml_collections.ConfigDict({"jdit": configs.jdit("tiny")}),
      stvae_params=_params(0),
    )
