"""The demo's learning check under other sampler settings, on a finished demo run.

  python bench/demo_sampler.py --workdir=lavin_demo [--num_steps=20] [--cfg_scale=1.5]

Scores the trained demo bundle (lavin_demo/bundle) and both baselines on the held-out
scenes exactly as the demo's evaluation stage does, with the given sampler (default:
the released 20 points and guidance 1.5, against the demo's one Euler step). Reports
go to <workdir>/eval_steps<N>_cfg<S>/. One JSON line per task.
"""

import argparse
import json
import pathlib

from lavin_jax import configs
from lavin_jax import demo
from lavin_jax.configs import demo as demo_configs


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a finished lavin-demo workdir")
  parser.add_argument("--num_steps", type=int, default=20)
  parser.add_argument("--cfg_scale", type=float, default=1.5)
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  bundle = workdir / "bundle"
  if not bundle.is_dir():
    raise SystemExit(f"{bundle} does not exist: run lavin-demo --workdir={workdir} first.")
  config = demo_configs.get_config("default")
  config.eval.num_steps, config.eval.cfg_scale = args.num_steps, args.cfg_scale
  train_pairs = demo.data_stage(config, workdir)
  results = demo.evaluate_stage(config, workdir, train_pairs, bundle,
                                eval_dir=f"eval_steps{args.num_steps}_cfg{args.cfg_scale:g}")
  for name, metric in config.tasks.items():
    r = results[name]
    print(json.dumps({
        "figure": "demo_sampler", "task": name, "metric": metric,
        "num_steps": args.num_steps, "cfg_scale": args.cfg_scale,
        "model": round(r["model"], 4), "mean_target": round(r["mean_target"], 4),
        "copy_query": round(r["copy_query"], 4),
        "beats_both": demo.beats_both(config, name, r)}),
          flush=True)


if __name__ == "__main__":
  main()
