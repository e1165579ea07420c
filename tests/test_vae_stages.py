"""The paper's two ST-VAE stages: images, then images+clips started from the first. A
SIGTERM in each stage (as a preemption would send) saves and ends the run; the rerun
resumes and ends bit for bit where an uninterrupted run does. The second stage trains
with every term (MSE, LPIPS, KL, adversarial) and the EMA, prints and records its
reconstruction report and exports its EMA params. LPIPS loads the in-memory weights of
tiny_vae.lpips_params in place of the weight files.

The runs go in a subprocess with a persistent compilation cache, so each stage's
programs compile once for its three runs.
"""

import json
import os
import signal
import subprocess
import sys
from unittest import mock

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 900


def test_two_stages_resume_exactly_after_a_stop_in_each(tmp_path):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  proc = subprocess.run(
    [sys.executable, __file__, str(tmp_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for stage, stop in (("images", 3), ("images+clips", 2)):
    run = result[stage]
    assert run["stopped_at"] == stop, stage
    assert run["resumed_to"] == 4, stage
    assert run["state_max_diff"] == 0.0, stage  # params, EMA, optimizers, discriminator
    assert run["logged_steps"] == [1, 2, 3, 4], stage
    assert run["losses_equal"], stage
  assert result["images+clips"]["kinds"] == [True, False, False, True]  # both sides of the stop
  for run in ("images_full", "images"):  # TensorBoard events and the profile of steps 2, 3
    assert result["loop_files"][run] == {"events_equal": True, "profiles": 1}, run
  assert {"photos/psnr", "photos/ssim", "photos/lpips"} <= set(result["report"])
  assert {"mse", "lpips", "kl", "generator", "adv_weight", "disc_loss"} <= set(
    result["images+clips"]["metrics"]
  )
  assert result["report_printed"]
  assert result["bundle_is_ema"] and not result["ema_is_params"]


# ---------------------------------------------------------------------------------------
# Subprocess: both stages, each uninterrupted and stopped + resumed.


def _train(config, workdir, stills, clips, stop_at=None):
  """vae.train; a SIGTERM arrives as step `stop_at` is logged."""
  from lavin_jax.train import loop  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import vae  # pylint: disable=g-import-not-at-top

  write = loop.MetricWriter.write

  def write_then_stop(self, step, metrics):
    write(self, step, metrics)
    if step == stop_at:
      os.kill(os.getpid(), signal.SIGTERM)

  with mock.patch.object(loop.MetricWriter, "write", write_then_stop):
    return vae.train(config, str(workdir), stills, clips)


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _stage(config, tmp, name, stills, clips, stop_at):
  """Trains uninterrupted in <name>_full, and stopped + resumed in <name>."""
  import jax  # pylint: disable=g-import-not-at-top

  full = _train(config, tmp / f"{name}_full", stills, clips)
  stopped = _train(config, tmp / name, stills, clips, stop_at=stop_at)
  stopped_at = int(stopped.step)
  resumed = _train(config, tmp / name, stills, clips)
  diffs = [
    float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    for a, b in zip(
      jax.tree.leaves(jax.device_get(full)), jax.tree.leaves(jax.device_get(resumed)), strict=True
    )
  ]
  losses = lambda records: [r["loss"] for r in records if "loss" in r]
  logged = [r["step"] for r in _records(tmp / name) if "loss" in r]
  return full, {
    "metrics": sorted(_records(tmp / name)[0]),
    "stopped_at": stopped_at,
    "resumed_to": int(resumed.step),
    "state_max_diff": max(diffs),
    "logged_steps": logged,
    "losses_equal": losses(_records(tmp / name)) == losses(_records(tmp / f"{name}_full")),
  }


def _main(tmp):
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, HERE)
  import tiny_vae  # pylint: disable=g-import-not-at-top

  from lavin_jax.eval import lpips as lpips_lib  # pylint: disable=g-import-not-at-top
  from lavin_jax.io import bundle  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import vae  # pylint: disable=g-import-not-at-top
  from lavin_jax.train import vae_data  # pylint: disable=g-import-not-at-top

  tmp = pathlib.Path(tmp)
  stills, clips = tiny_vae.stills(6), tiny_vae.clips(3)
  result = {}
  images = tiny_vae.config(total_steps=4, checkpoint_every=2, l1_weight=0.5, profile_steps=(2, 4))
  _, result["images"] = _stage(images, tmp, "images", stills, None, stop_at=3)
  # The shared loop's TensorBoard events and profile window (stopped at 3, the resumed
  # run starts after the window).
  import test_loop  # pylint: disable=g-import-not-at-top

  result["loop_files"] = {}
  for run in ("images_full", "images"):
    scalars, _ = test_loop.event_scalars(tmp / run)
    want = {(k, r["step"]): v for r in _records(tmp / run) for k, v in r.items() if k != "step"}
    result["loop_files"][run] = {
      "events_equal": scalars.keys() == want.keys()
      and all(scalars[k] == np.float32(v) for k, v in want.items()),
      "profiles": len(test_loop.profile_files(tmp / run)),
    }

  both = tiny_vae.config(
    stage="images+clips",
    clip_fraction=0.5,
    seed=2,
    total_steps=4,
    checkpoint_every=2,
    adv_weight=0.5,
    disc_start=1,
    ema_decay=0.9,
    lpips_weight=0.1,
    lpips_vgg="vgg16.pth",
    lpips_lin="lin.pth",
    init_from=str(tmp / "images_full"),
  )
  both.report_sources = ml_collections.ConfigDict({"photos": "photos"})
  both.report_examples = 2
  lpips = (lpips_lib.LPIPS(), tiny_vae.lpips_params())
  printed = io.StringIO()
  with (
    contextlib.redirect_stdout(printed),
    mock.patch.object(lpips_lib, "load_lpips", lambda vgg, lin: lpips),
  ):
    state, result["images+clips"] = _stage(both, tmp, "both", stills, clips, stop_at=2)
  result["images+clips"]["kinds"] = [vae_data.is_clip_step(both, s) for s in range(4)]
  result["report"] = _records(tmp / "both_full")[-1]
  result["report_printed"] = "ST-VAE reconstructions at step 4" in printed.getvalue()

  with (
    contextlib.redirect_stdout(io.StringIO()),
    mock.patch.object(lpips_lib, "load_lpips", lambda vgg, lin: lpips),
  ):
    out = vae.train_and_export(both, str(tmp / "both_full"), stills, clips)
  exported = bundle.load_bundle(out)[1]["stvae"]
  same = lambda a, b: all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(jax.device_get(b)), strict=True)
  )
  result["bundle_is_ema"] = same(exported, state.ema_params)
  result["ema_is_params"] = same(exported, state.params)
  print(json.dumps(result))


if __name__ == "__main__":
  _main(sys.argv[1])
