"""Which model to run: an inference bundle, or the released files at a size.

`ModelFiles.check()` and `ModelFiles.configs()` read no weights, so an entry point can
validate every input against the model's configs before anything heavy is loaded.
`attention` overrides the J-DiT's attention implementation (`ATTENTION`).
"""

import dataclasses
import os
from typing import Optional

import jax
import ml_collections

from lavin_jax.configs import models as model_configs
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.io import bundle as bundle_lib
from lavin_jax.models import attention as attention_lib

ATTENTION = ("auto",) + tuple(attention_lib.IMPLEMENTATIONS)
_PLATFORM_ONLY = {"cudnn": "gpu", "splash": "tpu"}  # implementations one platform runs


@dataclasses.dataclass(frozen=True)
class ModelFiles:
  """A bundle directory, or the released stvae.pt + lavin_dit.safetensors at `size`."""

  bundle: Optional[str] = None
  vae_path: Optional[str] = None
  dit_path: Optional[str] = None
  size: str = "3.4b"  # J-DiT size of dit_path (lavin_jax.configs.JDIT_SIZES)
  attention: Optional[str] = None  # one of ATTENTION; None keeps the model's own

  def check(self) -> None:
    """Raises unless exactly one model is named, its files exist and it can run here."""
    if self.attention is not None and self.attention not in ATTENTION:
      raise ValueError(f"--attention={self.attention!r} is unknown; choose one of {ATTENTION}.")
    platform = _PLATFORM_ONLY.get(self.attention)
    if platform and jax.default_backend() != platform:
      raise ValueError(
        f"--attention={self.attention} needs a {platform.upper()}, but the backend is "
        f"{jax.default_backend()!r}; choose another implementation."
      )
    released = (self.vae_path, self.dit_path)
    if self.bundle and any(released):
      raise ValueError("Give --bundle or --vae_path with --dit_path, not both.")
    if not self.bundle and not all(released):
      raise ValueError(
        "Name the model: --bundle=DIR, or --vae_path=stvae.pt with "
        "--dit_path=lavin_dit.safetensors."
      )
    if self.bundle:
      config_file = os.path.join(self.bundle, bundle_lib.CONFIG_FILE)
      if not os.path.isfile(config_file):
        raise FileNotFoundError(
          f"--bundle: no inference bundle at {self.bundle!r} (missing "
          f"{bundle_lib.CONFIG_FILE}); write one with launch/convert.py."
        )
      return
    model_configs.jdit(self.size)  # an unknown size raises here
    for flag, path in (("--vae_path", self.vae_path), ("--dit_path", self.dit_path)):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: no file at {path!r}.")

  def configs(self) -> ml_collections.ConfigDict:
    """The model's {'jdit', 'stvae'} configs, read without loading any weights."""
    self.check()
    if self.bundle:
      config = pipeline_lib.with_defaults(bundle_lib.load_config(self.bundle))
    else:
      config = ml_collections.ConfigDict(
        {"jdit": model_configs.jdit(self.size), "stvae": model_configs.stvae("released")}
      )
    if self.attention:
      config.jdit.attention_impl = self.attention
    return config

  def pixel_multiple(self) -> int:
    """Image sides the model takes are multiples of this."""
    c = self.configs()
    return model_configs.pixel_multiple(c.stvae, c.jdit)

  def load(self) -> pipeline_lib.Pipeline:
    """The in-context pipeline of these files."""
    self.check()
    if self.bundle:
      return pipeline_lib.Pipeline.from_bundle(self.bundle, attention=self.attention)
    return pipeline_lib.Pipeline.from_released(
      self.vae_path, self.dit_path, jdit_config=self.configs().jdit
    )

  def describe(self) -> dict:
    """The files as JSON-ready facts for reports."""
    files = {"bundle": self.bundle}
    if not self.bundle:
      files = {"vae_path": self.vae_path, "dit_path": self.dit_path, "size": self.size}
    return files if self.attention is None else {**files, "attention": self.attention}


class LoadedModel:
  """A pipeline already built, where a `ModelFiles` is asked for (`predict_templates`):
  a long-running process or a benchmark reuses it, its compiles included."""

  def __init__(self, pipe: pipeline_lib.Pipeline):
    self._pipe = pipe

  def configs(self) -> ml_collections.ConfigDict:
    return self._pipe.config

  def pixel_multiple(self) -> int:
    return self._pipe.pixel_multiple

  def load(self) -> pipeline_lib.Pipeline:
    return self._pipe
