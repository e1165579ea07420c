"""The demo end to end at smoke settings: every output is produced, and a rerun resumes."""

import json

from lavin_jax import configs
from lavin_jax import demo


def test_smoke_run_writes_every_output_and_resumes(tmp_path, capsys):
  config = configs.demo("smoke")
  summary = demo.run(config, tmp_path)
  tasks = list(config.tasks)
  for name in tasks:
    for folder in ("eval", "eval/mean_target", "eval/copy_query"):
      assert (tmp_path / folder / f"{name}.png").is_file()
      report = json.loads((tmp_path / folder / f"{name}.json").read_text())
      assert config.tasks[name] in report["metrics"]
  for path in ("metrics.json", "loss_curves.png", "bundle/config.json",
               "vae_bundle/config.json", "dit/metrics.jsonl", "vae/metrics.jsonl"):
    assert (tmp_path / path).is_file(), path
  written = json.loads((tmp_path / "metrics.json").read_text())
  assert written["results"] == summary["results"] and set(written["results"]) == set(tasks)
  assert 0 <= summary["wins"] <= len(tasks)
  assert "beats both baselines on" in capsys.readouterr().out
  # The bundle holds the fitted latent normalisation of the trained ST-VAE.
  bundle_config = json.loads((tmp_path / "bundle" / "config.json").read_text())
  assert bundle_config["stvae"]["latent_scale"] != configs.stvae("tiny").latent_scale

  # A second run finds every stage done: the same results, no training.
  again = demo.run(config, tmp_path)
  assert again["results"] == summary["results"]
  assert len((tmp_path / "dit" / "metrics.jsonl").read_text().splitlines()) == config.dit.steps


def test_learning_check_counts_tasks_beating_both_baselines():
  config = configs.demo("smoke")
  results = {name: {"model": 0.5, "mean_target": 0.4, "copy_query": 0.6}
             for name in config.tasks}
  table, wins = demo.learning_check(config, results)
  higher = [n for n in config.tasks if config.higher_is_better[n]]
  assert wins == 0  # 0.5 is between the baselines whichever way is better
  results[higher[0]]["model"] = 0.7
  lower = [n for n in config.tasks if not config.higher_is_better[n]]
  results[lower[0]]["model"] = 0.3
  table, wins = demo.learning_check(config, results)
  assert wins == 2 and f"{wins} of {len(config.tasks)}" in table
