r"""The end-to-end demo: a small LaVin-DiT trained and evaluated on this machine.

  lavin-demo --workdir=/tmp/lavin_demo
  lavin-demo --workdir=/tmp/lavin_demo --config.scale=0.5     # shorter
  python launch/demo.py --config=configs/demo.py:smoke --workdir=/tmp/lavin_smoke

Stages, each skipped when its output exists (an interrupted run resumes):
  1. data   build the built-in rendered scenes (lavin_jax.data.synthetic) and render
            every demo task's training pairs once (all later stages use them)
  2. vae    train a small ST-VAE (MSE + KL) on the stills of every demo task's training
            pairs, inputs and targets -> vae_bundle/
  3. dit    encode every demo task's training pairs once with the frozen ST-VAE
            (dit/latents), then train a small J-DiT on in-context episodes drawn from
            them (lavin_jax.data.latents; orbax checkpoints in dit/checkpoints)
            -> bundle/ (EMA J-DiT + ST-VAE)
  4. eval   in-context predictions on held-out scenes for every demo task, and two
            baselines: the mean training target, and a copy of the query (a report
            written for the current bundle with the same settings is reused)
  5. report eval/<task>.png grids (context | query | prediction | ground truth),
            metrics.json, loss_curves.png, and the learning check printed as a table
"""

import functools
import json
import math
import pathlib
import time

from absl import logging
import ml_collections
import numpy as np

from lavin_jax import configs
from lavin_jax.data import latents
from lavin_jax.data import specs
from lavin_jax.data import tasks as tasks_lib
from lavin_jax.eval import runner
from lavin_jax.inference import pipeline as inference
from lavin_jax.io import bundle as bundle_lib
from lavin_jax.train import checkpoint
from lavin_jax.train import dit as dit_train

BASELINES = ("mean_target", "copy_query")


def _source(config, workdir, split):
  return specs.get_source(
    {
      "kind": "synthetic",
      "name": config.synthetic,
      "split": split,
      "content": "images",
      "data_dir": str(workdir / "data"),
    }
  )


def _steps(config, steps):
  return max(1, int(round(steps * config.scale)))


# ---------------------------------------------------------------------------------------
# Stage 1: data.


def render_pairs(config, source) -> dict:
  """{task: (inputs, targets)}: every demo task's centred pairs of `source`, each
  (N, 1, H, W, 3) pixels in [-1, 1]."""
  return {
    name: latents.render_task_pairs(
      source, tasks_lib.get_task(name, config.dit.data.task), config.resolution
    )
    for name in config.tasks
  }


def data_stage(config, workdir: pathlib.Path) -> dict:
  """Builds the synthetic data set unless built; returns `render_pairs` of its training
  split."""
  from lavin_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  synthetic.build_synthetic(workdir / "data", config.synthetic, 1, ("images",))
  return render_pairs(config, _source(config, workdir, "train"))


# ---------------------------------------------------------------------------------------
# Stage 2: the ST-VAE.


def distinct_stills(pairs: dict) -> list[dict]:
  """The distinct stills among the pairs' inputs and targets, as a source of uint8
  images: the ST-VAE learns to code the target renderings (depth, normals, masks) as
  well as the photographs."""
  stills = np.concatenate([clips[:, 0] for pair in pairs.values() for clips in pair])
  pixels = np.unique(np.round((stills + 1.0) * 127.5).astype(np.uint8), axis=0)
  return [{"image": image} for image in pixels]


def train_vae_stage(config, workdir: pathlib.Path, train_pairs: dict) -> pathlib.Path:
  """Trains the small ST-VAE on the training pairs' stills (lavin_jax.train.vae, which
  also scores reconstructions of held-out photographs); returns its bundle directory."""
  out = workdir / "vae_bundle"
  if (out / bundle_lib.CONFIG_FILE).exists():
    return out
  from lavin_jax.train import vae as vae_train  # pylint: disable=g-import-not-at-top

  vae_config = ml_collections.ConfigDict(config.vae.to_dict())
  vae_config.total_steps = _steps(config, vae_config.total_steps)
  if (
    vae_train.train_and_export(
      vae_config, str(workdir / "vae"), distinct_stills(train_pairs), out=str(out)
    )
    is None
  ):
    raise SystemExit("The ST-VAE stage stopped on a stop request; run the demo again to resume it.")
  return out


# ---------------------------------------------------------------------------------------
# Stage 3: the J-DiT.


def encode_training_pairs(config, workdir: pathlib.Path, vae_bundle: pathlib.Path):
  """The J-DiT config for the training scenes' latents, and the ST-VAE params.

  Every demo task's pairs of the training scenes are encoded once with the frozen
  ST-VAE into dit/latents (lavin_jax.data.latents; finished shards are kept), and the
  config's latent normalisation is fitted to their posterior means (zero mean, unit
  variance).
  """
  bundle_config, params = bundle_lib.load_bundle(vae_bundle)
  c = ml_collections.ConfigDict(config.dit.to_dict())
  c.vae = bundle_config.stvae
  c.vae_checkpoint = str(vae_bundle)
  scenes = f"synthetic:{config.synthetic},content=images,split=train,data_dir={workdir / 'data'}"
  c.sources = {"scenes": scenes}
  dit_workdir = str(workdir / "dit")
  dit_train.encode_latents(c, dit_workdir)
  shift, std = latents.mean_statistics(dit_train.latents_dir(c, dit_workdir))
  c.vae.latent_shift = shift
  c.vae.latent_scale = 1.0 / std
  return c, params["stvae"]


def train_dit_stage(config, workdir: pathlib.Path, vae_bundle: pathlib.Path) -> pathlib.Path:
  """Trains J-DiT on in-context episodes of the stored latents (resuming from its
  checkpoints); returns the inference bundle (EMA J-DiT + the ST-VAE)."""
  out = workdir / "bundle"
  if (out / bundle_lib.CONFIG_FILE).exists():
    return out
  c, vae_params = encode_training_pairs(config, workdir, vae_bundle)
  c.total_steps = _steps(config, c.total_steps)
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.total_steps // 2)
  c.optimizer.decay_steps = c.total_steps  # the schedule spans the scaled run
  state = dit_train.train(c, str(workdir / "dit"))
  checkpoint.export_bundle(out, state.ema_params, c, vae_params=vae_params, dtype=None)
  return out


# ---------------------------------------------------------------------------------------
# Stage 4: evaluation against two baselines.


def _baseline_fn(kind, mean):
  def predict(context_inputs, context_targets, query, *, seed):
    del context_inputs, context_targets, seed
    return query if kind == "copy_query" else np.broadcast_to(mean, query.shape)

  return predict


def finished_report(
  path: pathlib.Path, run: ml_collections.ConfigDict, run_info: dict, bundle: pathlib.Path
):
  """The evaluation report at `path` if it was written after the bundle with the same
  settings, else None (the evaluation is redone)."""
  if not path.exists() or path.stat().st_mtime < (bundle / bundle_lib.CONFIG_FILE).stat().st_mtime:
    return None
  report = json.loads(path.read_text())
  settings = json.loads(json.dumps({"config": run.to_dict(), "run": run_info}))
  return report if {k: report.get(k) for k in settings} == settings else None


def evaluate_stage(
  config, workdir: pathlib.Path, train_pairs: dict, bundle: pathlib.Path, eval_dir: str = "eval"
) -> dict:
  """Scores the model and both baselines on the held-out scenes; returns the results.

  Reports go to workdir/eval_dir; those already written for this bundle with the same
  settings are reused.
  """
  pipe = inference.Pipeline.from_bundle(bundle)
  train_source = _source(config, workdir, "train")
  test_source = _source(config, workdir, "validation")
  e = config.eval
  results = {}
  for name, metric in config.tasks.items():
    run = ml_collections.ConfigDict(e.to_dict())
    run.task = name
    sampling = run.sampling.to_dict()
    predictors = {
      "model": (functools.partial(pipe, **sampling), {"predictor": "model", **sampling}),
      "mean_target": (
        _baseline_fn("mean_target", train_pairs[name][1].mean(axis=0)),
        {"predictor": "mean_target"},
      ),
      "copy_query": (_baseline_fn("copy_query", None), {"predictor": "copy_query"}),
    }
    results[name] = {}
    for who, (fn, run_info) in predictors.items():
      out_dir = workdir / eval_dir / ("" if who == "model" else who)
      report = finished_report(out_dir / f"{name}.json", run, run_info, bundle)
      if report is None:
        report = runner.evaluate(
          fn, test_source, run, out_dir, context_source=train_source, run_info=run_info
        )
      results[name][who] = report["metrics"][metric]
  return results


# ---------------------------------------------------------------------------------------
# Stage 5: report.


def beats_both(config, name: str, scores: dict) -> bool:
  """Whether the model's score on task `name` is better than both baselines'."""
  sign = 1.0 if config.higher_is_better[name] else -1.0
  return all(sign * scores["model"] > sign * scores[b] for b in BASELINES)


def learning_check(config, results: dict) -> tuple[str, int]:
  """The table of model vs baselines per task, and how many tasks beat both."""
  header = f"{'task':26s} {'metric':13s} {'model':>9s} {'mean tgt':>9s} {'copy qry':>9s}"
  lines = [header + "  beats both"]
  wins = 0
  for name, metric in config.tasks.items():
    r = results[name]
    better = beats_both(config, name, r)
    wins += better
    lines.append(
      f"{name:26s} {metric:13s} {r['model']:9.4f} {r['mean_target']:9.4f} "
      f"{r['copy_query']:9.4f}  {'yes' if better else 'no'}"
    )
  lines.append(f"The model beats both baselines on {wins} of {len(config.tasks)} tasks.")
  return "\n".join(lines), wins


def plot_losses(workdir: pathlib.Path) -> pathlib.Path:
  """loss_curves.png from the metrics.jsonl of both training runs."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, run, title in zip(axes, ("vae", "dit"), ("ST-VAE", "J-DiT (flow loss)")):
    path = workdir / run / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    records = [r for r in records if "loss" in r]  # not the ST-VAE's reconstruction report
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8)
    ax.set(title=title, xlabel="step", ylabel="loss", yscale="log")
  fig.tight_layout()
  out = workdir / "loss_curves.png"
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


def run(config: ml_collections.ConfigDict, workdir) -> dict:
  """Runs every stage in `workdir`; returns {'results', 'wins', 'table', 'seconds'}."""
  if not (math.isfinite(config.scale) and config.scale > 0):
    raise ValueError(
      f"config.scale multiplies the training steps and must be a positive "
      f"number, got {config.scale}; e.g. --config.scale=0.5 for a shorter run."
    )
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  seconds = {}

  def stage(name, fn, *args):
    logging.info("Stage %d/5: %s", len(seconds) + 1, name)
    start = time.perf_counter()
    out = fn(*args)
    seconds[name] = round(time.perf_counter() - start, 1)
    return out

  train_pairs = stage("data", data_stage, config, workdir)
  vae_bundle = stage("vae", train_vae_stage, config, workdir, train_pairs)
  bundle = stage("dit", train_dit_stage, config, workdir, vae_bundle)
  results = stage("eval", evaluate_stage, config, workdir, train_pairs, bundle)
  table, wins = stage("report", learning_check, config, results)
  plot_losses(workdir)
  summary = {"results": results, "wins": wins, "table": table, "seconds": seconds}
  (workdir / "metrics.json").write_text(json.dumps(summary, indent=1))
  print(table, flush=True)
  return summary


def cli():
  """Console entry point `lavin-demo` (same flags as launch/demo.py)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  from lavin_jax import cli  # pylint: disable=g-import-not-at-top

  config_flag = config_flags.DEFINE_config_file(
    "config", configs.path("demo"), "Demo settings, e.g. lavin_jax/configs/demo.py:smoke."
  )
  workdir = flags.DEFINE_string("workdir", "lavin_demo", "Output directory; resumes.")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run(config_flag.value, workdir.value)

  cli.run(main)
