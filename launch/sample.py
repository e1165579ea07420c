r"""In-context prediction from the command line, with the released flags and defaults.

  # The released weights (converted on the fly), one query:
  python launch/sample.py --vae_path=stvae.pt --dit_path=lavin_dit.safetensors \
      --task_dir=templates/depth --query=photo.png --output=depth.png
  # An inference bundle, every image of a folder, 8 at a time, the nearest pairs:
  python launch/sample.py --bundle=/path/to/bundle --task_dir=templates/depth \
      --query=photos/ --output=predictions/ --batch_size=8 --select_context=nearest
  # A video task: clip pairs (<name>_input.mp4 / .gif / frame folder) and a clip query:
  python launch/sample.py --bundle=b --task_dir=templates/video_depth \
      --query=clip.mp4 --output=depth.gif --num_frames=9

`--task_dir` holds the task's pairs as <name>_input.png / <name>_target.png, or as
clips for a video task; `--num_prompt` of them condition each query (drawn with
replacement as released, the nearest to the query, or `fixed`: one draw for every
query, whose keys and values a J-DiT trained with independent_condition computes once
for the whole folder). The output is the released [query | prediction] PNG (GIF or MP4
for clips); in folder mode one file per query under --output. Every input is checked
before the model is loaded (lavin_jax.inference.templates).
"""

from absl import app
from absl import flags

from lavin_jax import cli
from lavin_jax import configs
from lavin_jax.configs import sampling
from lavin_jax.configs import tasks
from lavin_jax.inference import loading
from lavin_jax.inference import templates

_RELEASED = sampling.released()
_QUERY = flags.DEFINE_string("query", None, "Query image or clip, or a folder of them.")
_OUTPUT = flags.DEFINE_string("output", None, "Output file, or a folder in folder mode.")
_TASK_DIR = flags.DEFINE_string("task_dir", None, "Template folder of the task's pairs.")
_BUNDLE = flags.DEFINE_string("bundle", None, "Inference bundle (or the released files).")
_VAE_PATH = flags.DEFINE_string("vae_path", None, "Released stvae.pt.")
_DIT_PATH = flags.DEFINE_string("dit_path", None, "Released lavin_dit.safetensors.")
_SIZE = flags.DEFINE_enum("size", "3.4b", configs.JDIT_SIZES, "J-DiT size of --dit_path.")
_ATTENTION = flags.DEFINE_enum("attention", None, loading.ATTENTION, "Attention implementation.")
_TIMESTEPS = flags.DEFINE_integer("timesteps", _RELEASED.num_steps, "Sampler time points.")
_HEIGHT = flags.DEFINE_integer("height", 512, "Height in pixels.")
_WIDTH = flags.DEFINE_integer("width", 512, "Width in pixels.")
_NUM_PROMPT = flags.DEFINE_integer("num_prompt", 4, "Context pairs per query.")
_SELECT = flags.DEFINE_enum(
  "select_context",
  "random",
  sampling.SELECTIONS,
  "Pairs per query: random (drawn per query, as released), nearest, or fixed (one draw for "
  "all; an independent_condition J-DiT then computes their keys/values once per folder).",
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1, "Queries per sampling call.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", _RELEASED.cfg_scale, "Guidance scale.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the pair draws, the posterior and the noise.")
_SAMPLER = flags.DEFINE_enum("sampler", _RELEASED.sampler, sampling.SAMPLERS, "ODE solver.")
_KV_REFRESH = flags.DEFINE_integer(
  "kv_refresh", _RELEASED.kv_refresh, "k > 1: condition keys/values every k-th step (approx.)."
)
_NUM_FRAMES = flags.DEFINE_integer(
  "num_frames", tasks.options().num_frames, "Video tasks: frames read from each clip (1 + 4k)."
)
_VIDEO_FORMAT = flags.DEFINE_enum(
  "video_format", sampling.VIDEO_FORMATS[0], sampling.VIDEO_FORMATS, "Clips written in folder mode."
)
_FPS = flags.DEFINE_integer("fps", sampling.VIDEO_FPS, "Frames per second of clips written.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  settings = sampling.released()
  settings.update(
    num_steps=_TIMESTEPS.value,
    cfg_scale=_CFG_SCALE.value,
    sampler=_SAMPLER.value,
    kv_refresh=_KV_REFRESH.value,
  )
  model = loading.ModelFiles(
    _BUNDLE.value, _VAE_PATH.value, _DIT_PATH.value, _SIZE.value, _ATTENTION.value
  )
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
    batch_size=_BATCH_SIZE.value,
    select_context=_SELECT.value,
    num_frames=_NUM_FRAMES.value,
    video_format=_VIDEO_FORMAT.value,
    fps=_FPS.value,
  )


if __name__ == "__main__":
  flags.mark_flags_as_required(["query", "output", "task_dir"])
  cli.run(main)
