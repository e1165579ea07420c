"""Nearest versus random context pairs on held-out data: one JSON line per task and variant.

  python bench/context_selection.py [--workdir=/tmp/demo_run] [--num_examples=64]
      [--num_pairs=2] [--seeds=0,1,2]

Needs a finished demo workdir (`lavin-demo --workdir=...`: its bundle/ and data/). For
every demo task the queries are the first N held-out scenes, the pool of context pairs
is every training scene's pair, and each variant scores the bundle with the demo's
evaluation settings (lavin_jax.eval.runner, the demo's metric per task):
  random          K pairs drawn at random from the pool (the runner's own draw; one
                  figure per seed: the spread of random choice)
  nearest_gG[_raw]  the K pairs whose inputs are nearest the query
                  (lavin_jax.inference.selection: G x G cells per frame; _raw without
                  subtracting the pool's mean feature)
"""

import functools
import pathlib
import tempfile

from absl import app
from absl import flags
import common
import ml_collections
import numpy as np

from lavin_jax.configs import demo as demo_configs
from lavin_jax.data import latents
from lavin_jax.data import specs
from lavin_jax.data import tasks as tasks_lib
from lavin_jax.eval import runner
from lavin_jax.inference import pipeline as pipeline_lib
from lavin_jax.inference import selection
from lavin_jax.inference import templates

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/demo_run", "A finished demo workdir.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 64, "Held-out queries per task.")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", 2, "Context pairs per query.")
_SEEDS = common.define_integers("seeds", "0,1,2", "Seeds of the random variant.")
_GRIDS = common.define_integers("grids", "1,4", "Cells per side of the nearest variants.")

_CHUNK = 64  # pairs encoded per ST-VAE call


def nearest_predictor(pipe, pool, grid, center, num_pairs, sampling):
  """predict_fn choosing each query's pairs from `pool` by `selection.nearest`."""
  features = selection.features(pool.input_means(), grid)

  def predict(context_inputs, context_targets, query, *, seed):
    del context_inputs, context_targets  # the runner's random draw, replaced
    query_moments = pipe.encode(query)
    picks = selection.nearest(
      selection.features(query_moments.mean, grid), features, num_pairs, center
    )
    latents = pipe.sample(*pool.pairs(picks), query_moments, seed=seed, **sampling)
    return np.asarray(pipe.decode(latents))

  return predict


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = pathlib.Path(_WORKDIR.value)
  demo = demo_configs.get_config()
  pipe = pipeline_lib.Pipeline.from_bundle(workdir / "bundle")
  source = lambda split: specs.get_source(
    {
      "kind": "synthetic",
      "name": demo.synthetic,
      "split": split,
      "content": "images",
      "data_dir": str(workdir / "data"),
    }
  )
  train, test = source("train"), source("validation")
  out = pathlib.Path(tempfile.mkdtemp(prefix="context_selection_"))
  for task, metric in demo.tasks.items():
    run = ml_collections.ConfigDict(demo.eval.to_dict())
    run.update(task=task, num_examples=_NUM_EXAMPLES.value, num_pairs=_NUM_PAIRS.value)
    sampling = run.sampling.to_dict()
    inputs, targets = latents.render_task_pairs(
      train, tasks_lib.get_task(task, demo.dit.data.task), demo.resolution
    )
    pairs = [{"input": i, "target": t} for i, t in zip(inputs, targets)]
    pool = templates.EncodedTemplates(pipe, pairs, lambda clip: clip, _CHUNK)
    random = functools.partial(pipe, **sampling)
    variants = {f"random_seed{s}": (s, random) for s in _SEEDS.value}
    for grid in _GRIDS.value:
      for center in (True, False):
        name = f"nearest_g{grid}{'' if center else '_raw'}"
        predict = nearest_predictor(pipe, pool, grid, center, run.num_pairs, sampling)
        variants[name] = (0, predict)
    for name, (seed, predict) in variants.items():
      run.seed = seed
      report = runner.evaluate(predict, test, run, out / name, context_source=train)
      common.print_figure(
        {
          "figure": "context_selection",
          "task": task,
          "variant": name,
          "metric": metric,
          "value": report["metrics"][metric],
          "higher_is_better": demo.higher_is_better[task],
          "num_examples": run.num_examples,
          "num_pairs": run.num_pairs,
          "pool": len(pairs),
        }
      )


if __name__ == "__main__":
  app.run(main)
