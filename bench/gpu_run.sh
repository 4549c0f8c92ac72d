#!/usr/bin/env bash
# The one GPU run of issue 15, at most 8 minutes in all: build for sm_90 only (resource report in
# $OUT/ptxas.txt), the CUDA tests of the kernels, the fp64tc tuning sweep and the three benchmark cases
# (bench_fp64tc.py), the paper-scale streaming case (m = 2430, N = 50,000, C = 100, float16, 24 GB
# memory map generated here, in the background while the tests run), then one short table
# (bench/gpu_summary.py). Writes under $OUT: pairwise_cuda.json (the summary), fp64tc.json (sweep and
# cases in full), stream_cuda.json, _tuning.json (copy to taskgeom/_tuning.json to adopt the sweep's
# table), logs. Run from the repository root:  TASKGEOM_COMMIT=<hash> OUT=/path bash bench/gpu_run.sh
set -uo pipefail
OUT=${OUT:-/tmp/taskgeom-gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(pwd)
export PYTHONUNBUFFERED=1
export TASKGEOM_COMMIT=${TASKGEOM_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
TOTAL=${TOTAL_BUDGET_S:-470} # seconds for everything
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }
# seconds a stage may take: its cap, or what is left of the total less a reserve for the later stages
allow() {
  local left=$((TOTAL - $(elapsed) - $2))
  ((left < $1)) && echo $((left > 10 ? left : 10)) || echo "$1"
}
STREAM_FILE=${STREAM_FILE:-/tmp/taskgeom_stream_2430x50000x100.npy}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# 1. build (sm_90 only, ptxas resource report kept)
export TASKGEOM_CUDA=1 TASKGEOM_CUDA_ARCHS=90 TASKGEOM_FP64TC_ALL=1 CMAKE_ARGS="-DTASKGEOM_PTXAS_VERBOSE=ON"  # every fp64tc instance: the sweep times them
if [[ -n ${BUILD_LOG:-} ]]; then # built already (bench/gpu_session.sh): reuse its log
  cp "$BUILD_LOG" "$OUT/build.log"
else
  timeout "$(allow 180 290)" python3 -m pip install --no-build-isolation --no-deps -v . >"$OUT/build.log" 2>&1 ||
    {
      tail -40 "$OUT/build.log"
      exit 1
    }
fi
grep -E "Compiling entry|registers|spill" "$OUT/build.log" >"$OUT/ptxas.txt" || true
echo "build: $(elapsed) s"
(cd /tmp && python3 -c "import taskgeom, json; print(json.dumps(taskgeom.build_info()))") | tee "$OUT/build_info.json"
# which matrix instructions the sm_90 binary holds (DMMA: FP64 tensor cores), and any local memory
so=$(cd /tmp && python3 -c "import taskgeom._cuda as m; print(m.__file__)")
timeout 60 cuobjdump -sass "$so" 2>/dev/null | grep -oE "DMMA[.0-9A-Z]*|LDL[.0-9A-Z]*|STL[.0-9A-Z]*" | sort | uniq -c \
  >"$OUT/sass.txt" || true
echo "sass: $(tr -s ' \n' ' ' <"$OUT/sass.txt")"

# the streaming file, generated on the GPU while the tests run (the tests are not timed)
(cd bench && python3 bench_stream.py --m 2430 --n 50000 --c 100 --path "$STREAM_FILE" --write-only \
  >"$OUT/stream_write.log" 2>&1) &
writer=$!

# 2. the kernel tests, CUDA cases included, against the installed package
rm -rf /tmp/taskgeom-tests && cp -r tests /tmp/taskgeom-tests
(cd /tmp/taskgeom-tests && timeout "$(allow 150 200)" python3 -m pytest -q -p no:cacheprovider \
  test_kernels.py test_tc_math.py test_fp64tc_layout.py >"$OUT/tests.log" 2>&1)
echo "tests (rc $?): $(tail -1 "$OUT/tests.log") at $(elapsed) s"
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -5

wait "$writer"
echo "stream file: $(tail -1 "$OUT/stream_write.log") at $(elapsed) s"

# 3. tuning sweep over the fp64tc instances and the three benchmark cases (torch reference, tiled)
cd "$ROOT/bench"
timeout "$(allow 240 130)" python3 bench_fp64tc.py --sweep --budget 120 --profile --json "$OUT/fp64tc.json" \
  --tuning "$OUT/_tuning.json" >"$OUT/fp64tc.log" 2>&1
echo "fp64tc bench (rc $?) at $(elapsed) s"
tail -5 "$OUT/fp64tc.log"

# 3b. hardware counters of the tuned and lean instances on shortened cases (ncu, where it reads them:
# Firecracker machines; KINDS.md), one text report: throughput against the peaks, memory, stall reasons
if command -v ncu >/dev/null && ((TOTAL - $(elapsed) > 150)); then
  lean=$(python3 -c "import taskgeom._cuda as m, re; print(' '.join(n for n in m.fp64tc_configs() if '_c1' in n or re.search(r'_s[0-9]+p?e$', n)))")
  # (^: not mirror_fp64tc_kernel; one launch per instance and case: the tuned one, 6 lean and 3 lean-epilogue
  # instances at C = 10, the tuned one and the 3 lean-epilogue ones at C = 100)
  TASKGEOM_FP64TC_TUNING="$OUT/_tuning.json" timeout 90 ncu --clock-control none --kernel-name regex:^fp64tc_kernel \
    --launch-count 14 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section Occupancy --section LaunchStats \
    python3 bench_fp64tc.py --cases 2430x1000x10 1000x1000x100 --once "" $lean >"$OUT/ncu.txt" 2>&1
  echo "ncu (rc $?) at $(elapsed) s"
fi

# 4. streaming the 24 GB memory map against max(file read, in-memory kernel)
TASKGEOM_FP64TC_TUNING="$OUT/_tuning.json" timeout "$(allow 150 5)" python3 bench_stream.py --m 2430 --n 50000 \
  --c 100 --path "$STREAM_FILE" --json "$OUT/stream_cuda.json" >"$OUT/stream.log" 2>&1
echo "stream (rc $?) at $(elapsed) s"
tail -3 "$OUT/stream.log"

echo "total: $(elapsed) s"
python3 gpu_summary.py "$OUT"
