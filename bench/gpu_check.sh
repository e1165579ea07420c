#!/usr/bin/env bash
# The GPU figures of lavin_jax on one GPU machine, in under ten minutes, with no network:
#
#   bash bench/gpu_check.sh [--cpu_smoke]
#
# 1. Installs, offline, the wheels of wheels/gpu (made by bench/gpu_wheels.sh where a
#    registry is reachable) whose packages this Python lacks, into $LAVIN_SITE
#    (default /tmp/lavin_site); the project runs from this source tree (PYTHONPATH).
#    A CUDA jax image with flax, optax, orbax, einops, absl and scikit-image has the rest.
# 2. The GPU-only tests (tests/test_*gpu*.py).
# 3. bench/train_step.py for 0.1B and 1B in bfloat16 (MFU against the chip's bf16 dense
#    peak as well as the measured matmul peak; the loop overhead).
# 4. bench/sample.py for 3.4B with 8 pairs at 256 px (the paper's A100: 4.67 s a sample).
# Each command has its own timeout; the figures are JSON lines on stdout, and the last
# line names the commands that failed (exit status 1 if any).
#
# --cpu_smoke: the same commands on the tiny model, for a machine without a GPU (checks
# the offline install and the command lines). PYTHON picks the interpreter (python3).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
wheels="${repo}/wheels/gpu"
site="${LAVIN_SITE:-/tmp/lavin_site}"
smoke=false
case "${1:-}" in
  --cpu_smoke) smoke=true ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--cpu_smoke]" >&2; exit 2 ;;
esac
export PYTHONPATH="${repo}:${site}${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONUNBUFFERED=1
failed=()

# run LABEL SECONDS COMMAND...: COMMAND under a timeout; a failure is noted, not fatal.
run() {
  local label="$1" seconds="$2"
  shift 2
  echo "# ${label}: $*" >&2
  if ! timeout "${seconds}" "$@"; then
    failed+=("${label}")
  fi
}

# ## 1. Offline install of the missing distributions.
if [[ -d "${wheels}" ]]; then
  missing="$("${python}" - "${wheels}" <<'PY'
import importlib.metadata as metadata
import pathlib
import sys

names = {p.name.split("-")[0] for p in pathlib.Path(sys.argv[1]).glob("*.whl")}
def have(name):
  try:
    metadata.version(name)
    return True
  except metadata.PackageNotFoundError:
    return False
print(" ".join(sorted(n for n in names if not have(n))))
PY
)"
  if [[ -n "${missing}" ]]; then
    echo "# installing from ${wheels}: ${missing}" >&2
    rm -rf "${site}"
    "${python}" -m pip install -q --no-index --no-deps --no-cache-dir --find-links "${wheels}" \
      --target "${site}" ${missing} || { echo "offline install failed" >&2; exit 1; }
  fi
else
  echo "# no ${wheels}: relying on the installed packages (bench/gpu_wheels.sh makes it)" >&2
fi
"${python}" -c "
import json, jax
import grain, ml_collections, tensorboardX, tensorflow_datasets
from lavin_jax.data import specs
from lavin_jax.train import dit
device = jax.devices()[0]
print(json.dumps({'figure': 'gpu_check_environment', 'jax': jax.__version__,
                  'backend': jax.default_backend(), 'device_kind': device.device_kind,
                  'devices': jax.device_count()}))
" || { echo "the project does not import; see above" >&2; exit 1; }

backend="$("${python}" -c 'import jax; print(jax.default_backend())' 2>/dev/null)"
if [[ "${backend}" != "gpu" && "${smoke}" == false ]]; then
  echo "No GPU here (backend ${backend}): the install and imports work; run with --cpu_smoke" \
    "for the tiny versions of the commands." >&2
  exit 0
fi

cd "${repo}"
# ## 2. GPU-only tests (they skip themselves without a GPU).
tests=(tests/test_*gpu*.py)
if [[ -e "${tests[0]}" ]]; then
  run gpu_tests 150 "${python}" -m pytest -q -p no:cacheprovider "${tests[@]}"
else
  echo "# no tests/test_*gpu*.py in this tree" >&2
fi

# ## 3. and 4. Benchmarks.
if [[ "${smoke}" == true ]]; then
  run train_step 210 "${python}" bench/train_step.py --sizes=tiny --batches=2 --pairs=2 --resolution=64 \
    --steps=2 --matmul_size=256 --loop_overhead_steps=3
  run sample 210 "${python}" bench/sample.py --sizes=tiny --pairs=2 --resolution=64 --num_steps=3 \
    --repeats=1 --dtype=float32
else
  run train_step 210 "${python}" bench/train_step.py --sizes=0.1b,1b --batches=8 --pairs=4 \
    --resolution=256 --steps=5 --dtype=bfloat16
  run sample 210 "${python}" bench/sample.py --sizes=3.4b --pairs=8 --resolution=256 --repeats=2 \
    --dtype=bfloat16
fi

"${python}" -c "import json, sys; print(json.dumps({'figure': 'gpu_check', 'failed': sys.argv[1:]}))" \
  "${failed[@]}"
[[ ${#failed[@]} -eq 0 ]]
