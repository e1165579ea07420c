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
Every input is checked before the model is loaded (lavin_jax.inference.templates).
"""

from absl import app
from absl import flags

from lavin_jax import cli
from lavin_jax import configs
from lavin_jax.configs import sampling
from lavin_jax.inference import loading
from lavin_jax.inference import templates

_RELEASED = sampling.released()
_QUERY = flags.DEFINE_string("query", None, "Query image, or a folder of query images.")
_OUTPUT = flags.DEFINE_string("output", None, "Output PNG, or a folder in folder mode.")
_TASK_DIR = flags.DEFINE_string("task_dir", None, "Template folder of the task's pairs.")
_BUNDLE = flags.DEFINE_string("bundle", None, "Inference bundle (or the released files).")
_VAE_PATH = flags.DEFINE_string("vae_path", None, "Released stvae.pt.")
_DIT_PATH = flags.DEFINE_string("dit_path", None, "Released lavin_dit.safetensors.")
_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size of --dit_path.")
_TIMESTEPS = flags.DEFINE_integer("timesteps", _RELEASED.num_steps, "Sampler time points.")
_HEIGHT = flags.DEFINE_integer("height", 512, "Height in pixels.")
_WIDTH = flags.DEFINE_integer("width", 512, "Width in pixels.")
_NUM_PROMPT = flags.DEFINE_integer("num_prompt", 4, "Context pairs per query.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", _RELEASED.cfg_scale, "Guidance scale.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the pair draws, the posterior and the noise.")
_SAMPLER = flags.DEFINE_enum("sampler", _RELEASED.sampler, sampling.SAMPLERS, "ODE solver.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = sampling.released()
  settings.update(num_steps=_TIMESTEPS.value, cfg_scale=_CFG_SCALE.value, sampler=_SAMPLER.value)
  model = loading.ModelFiles(_BUNDLE.value, _VAE_PATH.value, _DIT_PATH.value, _SIZE.value)
  templates.predict_templates(
    model,
    _TASK_DIR.value,
    _QUERY.value,
    _OUTPUT.value,
    height=_HEIGHT.value,
    width=_WIDTH.value,
    num_prompt=_NUM_PROMPT.value,
    seed=_SEED.value,
    sampling=settings,
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["query", "output", "task_dir"])
  cli.run(main)
