"""Profile one J-DiT computation: a jax.profiler trace and its top ops by time.

  python bench/profile.py [--what=forward] [--size=0.1b] [--pairs=4] [--resolution=256]
      [--dtype=float32] [--override=attention_impl=auto,remat_policy=none]
      [--repeats=2] [--top=15] [--trace_dir=/tmp/lavin_profile]

--what is forward (one velocity evaluation), train (one AdamW step) or sample (the
20-point guided Euler loop; on its exact condition cache with
--override=independent_condition=true); see bench/workloads.py. The computation is compiled and run
once, timed over `repeats` runs (best), then traced over `repeats` more runs. The trace's
XSpace (`<trace_dir>/**/*.xplane.pb`, readable with xprof/TensorBoard) is parsed with
jax.profiler.ProfileData: every event that names an HLO op is summed per op. Prints one
JSON line for the run (seconds, FLOP/s, MFU against a matmul measured in the same
process), then one per top op: milliseconds per run, share of the summed op time,
calls per run, and the op's HLO kind, shape and JAX source name; before them, the seconds
per run by category (matmul, transpose, reduce, elementwise: an op containing a dot
counts as matmul, else one containing a transpose as transpose, and so on).
"""

import collections
import pathlib
import re

from absl import app
from absl import flags
import common
import jax
from jax import profiler
import workloads

from lavin_jax import configs
from lavin_jax import flow
from lavin_jax.inference import cached_sampling
from lavin_jax.models import jdit

_WHAT = flags.DEFINE_enum(
  "what", "forward", ["forward", "train", "sample"], "The computation to profile."
)
_SIZE = flags.DEFINE_enum("size", "0.1b", configs.JDIT_SIZES, "J-DiT size.")
_OVERRIDE = flags.DEFINE_list("override", [], "J-DiT config 'field=value' overrides.")
_BATCH = flags.DEFINE_integer("batch", 1, "Examples per forward pass or train step.")
_PAIRS = flags.DEFINE_integer("pairs", 4, "Context pairs per example.")
_RESOLUTION = flags.DEFINE_integer("resolution", 256, "Image side in pixels.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 20, "Sampler time points (--what=sample).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "J-DiT compute dtype.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs, then traced runs.")
_TOP = flags.DEFINE_integer("top", 15, "Ops to print.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "/tmp/lavin_profile", "Trace directory.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the peak matmul.")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+(?: \S+)*?) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
# Control-flow thunks can span the events of their bodies: left out of the sums.
_CONTROL_FLOW = ("while", "conditional", "call")
_SKIP = {"parameter", "bitcast", "constant", "get-tuple-element", "tuple", "copy"}


def hlo_ops(hlo_text: str) -> dict:
  """Instruction name -> (opcode, shape, op_name, called computation) from HLO text."""
  ops, computations, current = {}, collections.defaultdict(list), None
  for line in hlo_text.splitlines():
    if (match := _COMPUTATION.match(line)) and " = " not in line:
      current = match.group(1)
      continue
    if not (match := _INSTRUCTION.match(line)):
      continue
    name, shape, opcode, rest = match.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    kind = re.search(r"kind=(\w+)", rest)
    ops[name] = dict(
      opcode=opcode,
      shape=shape,
      kind=kind and kind.group(1),
      op_name=op_name and op_name.group(1),
      calls=calls and calls.group(1),
    )
    computations[current].append(name)
  for op in ops.values():  # a fusion: the ops inside, and their source name if it has none
    inner = [ops[n] for n in computations.get(op["calls"], ())]
    op["inside"] = sorted({i["opcode"] for i in inner} - _SKIP)
    if op["op_name"] is None:
      op["op_name"] = next(
        (i["op_name"] for i in inner if i["opcode"] in ("dot", "reduce") and i["op_name"]),
        next((i["op_name"] for i in inner if i["op_name"]), None),
      )
  return ops


def op_times(trace_dir: pathlib.Path) -> tuple[dict, dict]:
  """(op name -> summed ns, op name -> event count) over the newest trace in trace_dir."""
  path = max(trace_dir.glob("**/*.xplane.pb"), key=lambda p: p.stat().st_mtime)
  totals, counts = collections.Counter(), collections.Counter()
  for plane in profiler.ProfileData.from_file(str(path)).planes:
    for line in plane.lines:
      for event in line.events:
        op = dict(event.stats).get("hlo_op")
        if op and not op.startswith(_CONTROL_FLOW):
          totals[op] += event.duration_ns
          counts[op] += 1
  return totals, counts


def category(op: dict) -> str:
  """matmul, transpose, reduce, elementwise or other: what an HLO op mostly does."""
  inside = set(op.get("inside") or ()) | {op.get("opcode")}
  for name, opcodes in (
    ("matmul", {"dot", "convolution"}),
    ("transpose", {"transpose"}),
    ("reduce", {"reduce"}),
  ):
    if inside & opcodes:
      return name
  return "elementwise" if op.get("opcode") == "fusion" else "other"


def _short(op_name: str | None) -> str | None:
  """The source name without the jit/while/checkpoint wrappers."""
  if op_name is None:
    return None
  drop = ("jit(", "while", "body", "closed_call", "checkpoint", "JDiT._blocks")
  return "/".join(p for p in op_name.split("/") if not p.startswith(drop))


def build() -> workloads.Workload:
  config = workloads.model_config(_SIZE.value, _DTYPE.value, _OVERRIDE.value)
  if _WHAT.value == "forward":
    return workloads.forward(config, _BATCH.value, _PAIRS.value, _RESOLUTION.value)
  if _WHAT.value == "sample":
    exact = jdit.independent_condition(config)
    make = cached_sampling.make_exact_sampler if exact else flow.make_guided_sampler
    return workloads.sampling(config, _PAIRS.value, _RESOLUTION.value, _NUM_STEPS.value, make)
  return workloads.train_step(_SIZE.value, config, _BATCH.value, _PAIRS.value, _RESOLUTION.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  peak = workloads.matmul_peak(jax.numpy.dtype(_DTYPE.value), _MATMUL_SIZE.value)
  work = build()
  jax.block_until_ready(work.run())
  seconds = min(common.repeat_seconds(work.run, _REPEATS.value))
  trace_dir = pathlib.Path(_TRACE_DIR.value)
  with profiler.trace(str(trace_dir)):
    for _ in range(_REPEATS.value):
      jax.block_until_ready(work.run())
  totals, counts = op_times(trace_dir)
  summed = sum(totals.values())
  common.print_figure(
    {
      "figure": "profile",
      "what": _WHAT.value,
      "size": _SIZE.value,
      "overrides": _OVERRIDE.value,
      "batch": _BATCH.value,
      "pairs": _PAIRS.value,
      "resolution": _RESOLUTION.value,
      "dtype": _DTYPE.value,
      "attention_impl": work.config.attention_impl,
      "remat_policy": work.config.remat_policy,
      "params_m": round(work.params / 1e6, 2),
      "backend": jax.default_backend(),
      "seconds": round(seconds, 4),
      "compile_seconds": round(work.compile_seconds, 2),
      "tflops_per_sec": round(work.flops / seconds / 1e12, 4),
      "matmul_peak_tflops": round(peak / 1e12, 4),
      "mfu": round(work.flops / seconds / peak, 4),
      "op_seconds_per_run": round(summed / 1e9 / _REPEATS.value, 4),
      "trace_dir": str(trace_dir),
    }
  )
  ops = hlo_ops(work.compiled.as_text())
  categories = collections.Counter()
  for name, ns in totals.items():
    categories[category(ops.get(name, {}))] += ns
  common.print_figure(
    {
      "figure": "op_categories",
      "what": _WHAT.value,
      **{name: round(ns / 1e9 / _REPEATS.value, 3) for name, ns in categories.most_common()},
    }
  )
  for rank, (name, ns) in enumerate(totals.most_common(_TOP.value)):
    op = ops.get(name, {})
    common.print_figure(
      {
        "figure": "top_op",
        "rank": rank + 1,
        "op": name,
        "ms_per_run": round(ns / 1e6 / _REPEATS.value, 2),
        "share": round(ns / summed, 4),
        "calls_per_run": counts[name] // _REPEATS.value,
        "kind": op.get("kind") or op.get("opcode"),
        "inside": op.get("inside"),
        "shape": op.get("shape"),
        "source": _short(op.get("op_name")),
      }
    )


if __name__ == "__main__":
  app.run(main)
