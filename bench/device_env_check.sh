#!/usr/bin/env bash
# Rehearse the GPU machine's software on this CPU machine before a window is spent on it: a virtual
# environment with the device's Python (3.12), torch 2.11.0 and torchvision 0.26.0 (CUDA 13.0 builds, run
# on the CPU), numpy 2.5.2, and none of the packages the device lacks (plotly, ray, hdf5plugin); the
# committed HEAD built there as bench/gpu_session.sh builds it (CUDA for sm_90 only, --no-build-isolation
# --no-deps), then the test suite against that build, less the main job's HTML report tests
# (test_report.py, test_picture.py: the report needs plotly, which no GPU stage uses).
# Versions as read off the device (/work/.library/device/KINDS.md, 2026-11); override with TORCH=, VISION=,
# NUMPY=. Usage, from the repository root: bash bench/device_env_check.sh   (about 10 minutes on 2 cores)
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
VENV=${VENV:-/tmp/taskgeom-device-env}
PY=${PY312:-}
if [[ -z $PY ]]; then # a python3.12 that runs (a pyenv shim may not), else pyenv's own 3.12
  for cand in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    if "$cand" -c "import ensurepip, venv" 2>/dev/null; then
      PY=$cand
      break
    fi
  done
fi
[[ -n $PY ]] || {
  echo "device_env_check: python3.12 not found (the device's Python); set PY312=/path/to/python3.12"
  exit 2
}
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "torch==${TORCH:-2.11.0}" "torchvision==${VISION:-0.26.0}" \
  "numpy==${NUMPY:-2.5.2}" scipy scikit-learn matplotlib pillow pyyaml tqdm pybind11 pytest hypothesis h5py \
  setuptools wheel cmake ninja
"$VENV/bin/python" -c '
import importlib.util, sys
extra = [m for m in ("plotly", "ray", "hdf5plugin") if importlib.util.find_spec(m)]
what = ", ".join(extra) or "nothing extra"
if sys.version_info[:2] != (3, 12) or extra:
    sys.exit(f"device_env_check: {sys.prefix} is Python {sys.version.split()[0]} with {what}; the device "
             "has 3.12 without plotly, ray, hdf5plugin: remove that environment or set VENV=")
' || exit 1
work=$(mktemp -d /tmp/taskgeom-device-env-XXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$ROOT" "$work/src"
if [[ -d $ROOT/../shared ]]; then # the data the tests read where it is present
  ln -s "$(cd "$ROOT/.." && pwd)/shared" "$work/shared"
fi
cd "$work/src"
export PATH="$VENV/bin:$PATH" TASKGEOM_CUDA=1 TASKGEOM_CUDA_ARCHS=90
python -m pip install -q --no-build-isolation --no-deps . >"$work/build.log" 2>&1 || {
  tail -30 "$work/build.log"
  exit 1
}
(cd /tmp && python -c "import taskgeom, taskgeom._cuda; print(taskgeom.build_info())")
# from outside the clone, so that the subprocesses some tests start import the installed build too
cd "$work"
pytest -q -p no:cacheprovider --rootdir src src/tests --ignore=src/tests/test_report.py \
  --ignore=src/tests/test_picture.py
