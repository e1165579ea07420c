r"""In-context prediction from the command line, with the released flags and defaults.

  # The released weights (converted on the fly), one query:
  python launch/sample.py --vae_path=stvae.pt --dit_path=lavin_dit.safetensors \
      --task_dir=templates/depth --query=photo.png --output=depth.png
  # An inference bundle (launch/convert.py or training), every image of a folder:
  python launch/sample.py --bundle=/path/to/bundle --task_dir=templates/depth \
      --query=photos/ --output=predictions/ --height=256 --width=256 --seed=1

`--task_dir` holds the task's example pairs as <name>_input.png / <name>_target.png;
`--num_prompt` of them are drawn with replacement for each query. The output is the
released [query | prediction] PNG; in folder mode, one PNG per query under --output.
Every input is checked before the model is loaded or anything is compiled.
"""

import os
import pathlib

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from lavin_jax import configs
from lavin_jax.data import sources
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import templates

_QUERY = flags.DEFINE_string("query", None, "Query image, or a folder of query images.")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG, or a folder in folder mode.")
_TASK_DIR = flags.DEFINE_string("task_dir", None, "Template folder of the task's pairs.")
_VAE_PATH = flags.DEFINE_string("vae_path", "", "Released stvae.pt.")
_DIT_PATH = flags.DEFINE_string("dit_path", "", "Released lavin_dit.safetensors.")
_BUNDLE = flags.DEFINE_string("bundle", None, "Inference bundle (instead of the released files).")
_DIT_SIZE = flags.DEFINE_enum("dit_size", "3.4b", ["tiny", "0.1b", "1b", "3.4b"],
                              "J-DiT size of --dit_path.")
_TIMESTEPS = flags.DEFINE_integer("timesteps", 20, "Time-grid points of the Euler sampler.")
_HEIGHT = flags.DEFINE_integer("height", 512, "Height, a multiple of 16.")
_WIDTH = flags.DEFINE_integer("width", 512, "Width, a multiple of 16.")
_NUM_PROMPT = flags.DEFINE_integer("num_prompt", 4, "Context pairs per query.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", 1.5, "Classifier-free guidance scale.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the pair draws, the posterior and the noise.")
_SAMPLER = flags.DEFINE_enum("sampler", "euler", list(pipeline_lib.SAMPLERS), "ODE solver.")


def _check_flags():
  """Every file and size check, before anything is loaded or compiled."""
  for name, value in (("--query", _QUERY.value), ("--output", _OUTPUT.value),
                      ("--task_dir", _TASK_DIR.value)):
    if not value:
      raise app.UsageError(f"{name} is required.")
  if _BUNDLE.value:
    if not os.path.isdir(_BUNDLE.value):
      raise FileNotFoundError(f"--bundle {_BUNDLE.value} is not a directory.")
  else:
    for name, value in (("--vae_path", _VAE_PATH.value), ("--dit_path", _DIT_PATH.value)):
      if not value:
        raise app.UsageError(f"Give --bundle, or both --vae_path and --dit_path ({name} is "
                             "missing).")
      if not os.path.isfile(value):
        raise FileNotFoundError(f"{name} {value} does not exist.")
  templates.check_size(_HEIGHT.value, _WIDTH.value)
  if _TIMESTEPS.value < 2:
    raise ValueError(f"--timesteps counts time-grid points and must be >= 2; got "
                     f"{_TIMESTEPS.value}.")
  if _NUM_PROMPT.value < 1:
    raise ValueError(f"--num_prompt must be >= 1; got {_NUM_PROMPT.value}.")
  queries = templates.query_files(_QUERY.value)
  pairs = sources.TemplateFolderSource(_TASK_DIR.value)  # unmatched names, no pairs: errors
  return queries, pairs


def _load_pipeline() -> pipeline_lib.Pipeline:
  if _BUNDLE.value:
    return pipeline_lib.Pipeline.from_bundle(_BUNDLE.value)
  return pipeline_lib.Pipeline.from_released(_VAE_PATH.value, _DIT_PATH.value,
                                             jdit_config=configs.jdit(_DIT_SIZE.value))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  queries, pairs = _check_flags()
  folder_mode = pathlib.Path(_QUERY.value).is_dir()
  pipe = _load_pipeline()
  rng = np.random.default_rng(_SEED.value)
  height, width = _HEIGHT.value, _WIDTH.value
  for i, path in enumerate(tqdm.tqdm(queries, desc="queries", disable=len(queries) == 1)):
    context_inputs, context_targets = templates.choose_prompts(
        pairs, _NUM_PROMPT.value, height, width, rng)
    query = templates.load_image(path, height, width)[None]  # (T=1, H, W, 3)
    prediction = pipe(context_inputs, context_targets, query, seed=_SEED.value + i,
                      num_steps=_TIMESTEPS.value, cfg_scale=_CFG_SCALE.value,
                      sampler=_SAMPLER.value)[0, 0]
    out = (pathlib.Path(_OUTPUT.value) / f"{path.stem}.png") if folder_mode else _OUTPUT.value
    templates.write_png(out, templates.side_by_side(
        [templates.to_uint8(query[0]), templates.to_uint8(prediction)]))
    logging.info("Wrote %s", out)


if __name__ == "__main__":
  app.run(main)
