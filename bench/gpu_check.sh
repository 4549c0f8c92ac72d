#!/usr/bin/env bash
# One-shot device check: build taskgeom, run the whole test suite (CUDA cases included) and the GPU
# benchmarks, writing logs and JSON under $OUT. Run from the repository root on the GPU machine.
set -uo pipefail
OUT=${OUT:-/tmp/taskgeom-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
start=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
(cd /tmp && python3 -c "import taskgeom, json; print(json.dumps(taskgeom.build_info()))") | tee "$OUT/build_info.json"
# the tests import the installed package (not the checkout) so the compiled modules are used
cp -r tests /tmp/taskgeom-tests
(cd /tmp/taskgeom-tests && timeout 240 python3 -m pytest -q -x -p no:cacheprovider . 2>&1 | tail -25) | tee "$OUT/tests.log"
echo "tests: $(( $(date +%s) - start )) s"
cd bench
timeout 200 python3 bench_pairwise.py --device cuda --json "$OUT/pairwise_cuda.json" 2>&1 | tail -8
timeout 60 python3 bench_progress.py --device cuda --m 500 --json "$OUT/progress_cuda.json" 2>&1 | tail -3
timeout 120 python3 bench_stream.py --m 2430 --n 10000 --c 100 --json "$OUT/stream_cuda.json" 2>&1 | tail -3
echo "total: $(( $(date +%s) - start )) s"
