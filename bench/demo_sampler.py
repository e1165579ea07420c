"""The demo's learning check under other sampler settings, on a finished demo run.

  python bench/demo_sampler.py --workdir=lavin_demo [--num_steps=20] [--cfg_scale=1.5]

Scores the trained demo bundle (lavin_demo/bundle) and both baselines on the held-out
scenes exactly as the demo's evaluation stage does, with the given sampler (default:
the released 20 points and guidance 1.5, against the demo's one Euler step). Reports
go to <workdir>/eval_steps<N>_cfg<S>/. One JSON line per task.
"""

import pathlib

from absl import app
from absl import flags
import common

from lavin_jax import demo
from lavin_jax.configs import demo as demo_configs
from lavin_jax.configs import sampling
from lavin_jax.io import bundle as bundle_lib

_RELEASED = sampling.released()
_WORKDIR = flags.DEFINE_string("workdir", None, "A finished lavin-demo workdir.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", _RELEASED.num_steps, "Sampler time points.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", _RELEASED.cfg_scale, "Guidance scale.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  bundle = workdir / "bundle"
  if not (bundle / bundle_lib.CONFIG_FILE).is_file():
    raise app.UsageError(
      f"{workdir} is not a demo run with a trained model (no "
      f"{bundle_lib.CONFIG_FILE} in {bundle}): run lavin-demo "
      f"--workdir={workdir} first."
    )
  config = demo_configs.get_config("default")
  config.eval.sampling.num_steps = _NUM_STEPS.value
  config.eval.sampling.cfg_scale = _CFG_SCALE.value
  train_pairs = demo.data_stage(config, workdir)
  results = demo.evaluate_stage(
    config,
    workdir,
    train_pairs,
    bundle,
    eval_dir=f"eval_steps{_NUM_STEPS.value}_cfg{_CFG_SCALE.value:g}",
  )
  for name, metric in config.tasks.items():
    r = results[name]
    common.print_figure(
      {
        "figure": "demo_sampler",
        "task": name,
        "metric": metric,
        "num_steps": _NUM_STEPS.value,
        "cfg_scale": _CFG_SCALE.value,
        "model": round(r["model"], 4),
        "mean_target": round(r["mean_target"], 4),
        "copy_query": round(r["copy_query"], 4),
        "beats_both": demo.beats_both(config, name, r),
      }
    )


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
