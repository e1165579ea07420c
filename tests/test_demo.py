"""The demo end to end at smoke settings: every output is produced, and a rerun resumes.

The smoke run is almost all XLA compilation, so it runs as the command line in a
subprocess with LLVM optimisation off (`--xla_backend_optimization_level=0`): the same
computation, compiled faster.
"""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections

from lavin_jax import configs
from lavin_jax import demo
from lavin_jax.configs import demo as demo_configs
from lavin_jax.io import bundle as bundle_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run_command_line(workdir):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  result = subprocess.run(
    [
      sys.executable,
      str(ROOT / "launch" / "demo.py"),
      f"--config={ROOT / 'lavin_jax' / 'configs' / 'demo.py'}:smoke",
      f"--workdir={workdir}",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stdout


def test_smoke_run_writes_every_output_and_resumes(tmp_path):
  config = demo_configs.get_config("smoke")
  stdout = _run_command_line(tmp_path)
  assert "beats both baselines on" in stdout
  tasks = list(config.tasks)
  for name in tasks:
    for folder in ("eval", "eval/mean_target", "eval/copy_query"):
      assert (tmp_path / folder / f"{name}.png").is_file()
      report = json.loads((tmp_path / folder / f"{name}.json").read_text())
      assert config.tasks[name] in report["metrics"]
  for path in (
    "metrics.json",
    "loss_curves.png",
    "bundle/config.json",
    "vae_bundle/config.json",
    "dit/metrics.jsonl",
    "vae/metrics.jsonl",
  ):
    assert (tmp_path / path).is_file(), path
  written = json.loads((tmp_path / "metrics.json").read_text())
  assert set(written["results"]) == set(tasks)
  # The win count is the tasks whose model score beats both baselines' scores.
  wins = 0
  for name, scores in written["results"].items():
    sign = 1 if config.higher_is_better[name] else -1
    wins += all(sign * scores["model"] > sign * scores[b] for b in ("mean_target", "copy_query"))
  assert written["wins"] == wins
  assert f"beats both baselines on {wins} of {len(tasks)} tasks" in stdout
  assert set(written["seconds"]) == {"data", "vae", "dit", "eval", "report"}
  # The bundle holds the fitted latent normalisation of the trained ST-VAE.
  bundle_config = json.loads((tmp_path / "bundle" / "config.json").read_text())
  assert bundle_config["stvae"]["latent_scale"] != configs.stvae("tiny").latent_scale

  # A second run finds every stage done: the same results, no training, no evaluation.
  report = tmp_path / "eval" / f"{tasks[0]}.json"
  written_at = report.stat().st_mtime_ns
  again = demo.run(config, tmp_path)
  assert again["results"] == written["results"]
  assert report.stat().st_mtime_ns == written_at
  assert (
    len((tmp_path / "dit" / "metrics.jsonl").read_text().splitlines()) == config.dit.total_steps
  )


def test_finished_report_is_reused_only_for_the_same_bundle_and_settings(tmp_path):
  bundle = tmp_path / "bundle"
  bundle.mkdir()
  (bundle / bundle_lib.CONFIG_FILE).write_text("{}")
  run = ml_collections.ConfigDict({"task": "depth_estimation", "num_pairs": 2})
  info = {"predictor": "model", "num_steps": 2}
  path = tmp_path / "report.json"
  path.write_text(json.dumps({"config": run.to_dict(), "run": info, "metrics": {"x": 1.0}}))
  assert demo.finished_report(path, run, info, bundle)["metrics"] == {"x": 1.0}
  assert demo.finished_report(path, run, dict(info, num_steps=20), bundle) is None
  assert demo.finished_report(tmp_path / "missing.json", run, info, bundle) is None
  # A bundle written after the report (a retrained model) makes the report stale.
  later = path.stat().st_mtime + 10
  os.utime(bundle / bundle_lib.CONFIG_FILE, (later, later))
  assert demo.finished_report(path, run, info, bundle) is None


def test_learning_check_counts_tasks_beating_both_baselines():
  config = demo_configs.get_config("smoke")
  results = {name: {"model": 0.5, "mean_target": 0.4, "copy_query": 0.6} for name in config.tasks}
  table, wins = demo.learning_check(config, results)
  higher = [n for n in config.tasks if config.higher_is_better[n]]
  assert wins == 0  # 0.5 is between the baselines whichever way is better
  results[higher[0]]["model"] = 0.7
  lower = [n for n in config.tasks if not config.higher_is_better[n]]
  results[lower[0]]["model"] = 0.3
  table, wins = demo.learning_check(config, results)
  assert wins == 2 and f"{wins} of {len(config.tasks)}" in table
