#!/usr/bin/env bash
# One prepared GPU window (at most ~9 minutes): a build for sm_90, the kernel run of issue 15
# (bench/gpu_run.sh: CUDA tests, fp64tc sweep and cases, 24 GB streaming), then fast training (issue 16:
# bench/bench_train.py on CIFAR-10) and the exact InPCA of 150,000 models (issue 13:
# bench/bench_inpca_gpu.py). Every stage has its own time cap and writes JSON under $OUT; a short table
# of each comes last. Run from the repository root with the CIFAR-10 tarballs in .devdata/cifar10:
#   TASKGEOM_COMMIT=<hash> OUT=/path [STAGES="kernels train inpca"] bash bench/gpu_session.sh
# STAGES may also name family-a or family-b-<part> (issue 16's CIFAR-10 family scripts, about 9 minutes each).
set -uo pipefail
OUT=${OUT:-/tmp/taskgeom-gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(pwd)
export PYTHONUNBUFFERED=1
export TASKGEOM_COMMIT=${TASKGEOM_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
TOTAL=${TOTAL_BUDGET_S:-540}
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }
cap() { # seconds a stage may take: its cap, or what is left of the total less a reserve for later stages
  local left=$((TOTAL - $(elapsed) - $2))
  ((left < $1)) && echo $((left > 10 ? left : 10)) || echo "$1"
}

STAGES=${STAGES:-kernels train inpca}
has() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"

# 0. build for sm_90 only, with the ptxas resource report
export TASKGEOM_CUDA=1 TASKGEOM_CUDA_ARCHS=90 TASKGEOM_FP64TC_ALL=1 CMAKE_ARGS="-DTASKGEOM_PTXAS_VERBOSE=ON"  # every fp64tc instance: the sweep times them
timeout "$(cap 200 300)" python3 -m pip install --no-build-isolation --no-deps -v . >"$OUT/build.log" 2>&1
echo "build (rc $?) at $(elapsed) s"
(cd /tmp && python3 -c "import taskgeom._cuda, taskgeom; print(taskgeom.build_info())") || {
  echo "taskgeom did not build with CUDA"
  tail -30 "$OUT/build.log"
  exit 1
}

# 1. issue 15: kernel tests + fp64tc sweep + profile + ncu + cases + streaming (bench/gpu_run.sh; 137 s on an
# H200 after the build at 8ea5968, before the profile and ncu steps; up to 480 s when no later stage asks for
# time: STAGES="kernels" alone gives it the window)
if has kernels; then
  later=0 # seconds kept for the stages after this one
  has train && later=$((later + 130))
  has inpca && later=$((later + 200))
  KERNEL_S=$(cap 480 $later)
  # gpu_run.sh fits its own stages (sweep, profile, ncu, streaming) into the same cap
  BUILD_LOG="$OUT/build.log" TOTAL_BUDGET_S=$((KERNEL_S - 5)) OUT="$OUT/kernels" timeout "$KERNEL_S" \
    bash bench/gpu_run.sh >"$OUT/kernels.log" 2>&1
  echo "kernels (rc $?) at $(elapsed) s"
  rm -f /tmp/taskgeom_stream_*.npy # 24 GB of disk back
fi

# 2. issue 16: fast training (its data decoded on first use, ~15 s)
cd "$ROOT/bench"
if has train; then
  # 240 s beside other stages (the fast-resnet sweep's head and the WRN-16-4 run); up to 480 s alone, where
  # bench_train.py's FAST_SWEEP runs in order as far as it fits beside WRN-16-4 and the concurrency check
  train_cap=240
  has kernels || has inpca || train_cap=480
  train_later=5
  has inpca && train_later=200
  TRAIN_S=$(cap $train_cap $train_later)
  timeout "$TRAIN_S" python3 bench_train.py --data "$ROOT/.devdata/cifar10" --json "$OUT/train.json" \
    --budget-s $((TRAIN_S - 15)) ${TRAIN_ARGS:-} >"$OUT/train.log" 2>&1
  echo "training (rc $?) at $(elapsed) s"
fi

# 3. issue 13: exact InPCA of 150,000 models, distances and top-k together
if has inpca; then
  INPCA_S=$(cap 200 5)
  timeout "$INPCA_S" python3 bench_inpca_gpu.py --m 150000 --n 1000 --c 10 --k 10 --json "$OUT/inpca_gpu.json" \
    --budget-s $((INPCA_S - 10)) >"$OUT/inpca.log" 2>&1
  echo "inpca (rc $?) at $(elapsed) s"
fi

# 4. issue 16: one CIFAR-10 family script per stage (family-a, family-b-r4-episodic, family-b-r4-kway,
# family-b-r5, family-b-r7), each into $OUT/<stage>/ (at most 8 files, 64 MB). Each gets a budget inside its
# cap (--budget-s: runs go seed by seed, those that would not fit are skipped, and results.json says which),
# so a window that runs short still returns every group's first seeds. Runs train FAMILY_WORKERS at once in
# processes sharing the GPU: 3 for the episodic part (30-image episodes leave the GPU mostly idle), else 2
# (one fast-resnet run at batches of 1,024 keeps the GPU busy by itself; a second overlaps its recordings).
# Several family stages in one call share what is left equally, a stage's unused time passing to the next.
# Issue 29: r4-episodic records about 96 checkpoints for a 2-way protonet run (the same density per step
# for every run: --checkpoint-every / --max-checkpoints), r5 trains SimCLR / Barlow 20 and FixMatch 15 epochs
# (--ssl-epochs, --fixmatch-epochs), r7 SimCLR 20, and family A adds 3 LayerNorm all-classes runs for Result 6;
# what does not fit the budget is skipped seed by seed and listed in results.json.
fam_left=0
for stage in $STAGES; do [[ $stage == family-* ]] && fam_left=$((fam_left + 1)); done
for stage in $STAGES; do
  workers=2
  case $stage in
  family-a) script=(cifar10_family_a.py) ;;
  family-b-r4-episodic) script=(cifar10_family_b.py --part r4-episodic) workers=3 ;;
  family-b-*) script=(cifar10_family_b.py --part "${stage#family-b-}") ;;
  *) continue ;;
  esac
  share=$(((TOTAL - $(elapsed) - 5) / fam_left))
  fam_left=$((fam_left - 1))
  FAM_S=$(cap $((share < 540 ? share : 540)) 5)
  (cd "$ROOT/experiments" && timeout "$FAM_S" python3 "${script[@]}" --data-path "$ROOT/.devdata/cifar10" \
    --out "$OUT/$stage" --budget-s $((FAM_S > 40 ? FAM_S - 20 : FAM_S / 2)) --reserve-s $((FAM_S < 240 ? FAM_S / 4 : 60)) \
    --workers "${FAMILY_WORKERS:-$workers}" >"$OUT/$stage.log" 2>&1)
  echo "$stage (rc $?) at $(elapsed) s"
done
echo "total: $(elapsed) s"

# What comes back: the device tool returns at most 8 files (16 MiB each, two folders down), so the results
# stay as files (summary.txt, the kernels' three JSONs, train.json, inpca_gpu.json, each family's
# results.json and summary.png) and every log goes into rest.tgz; the families' store.tar stay behind.
{
  for f in kernels train inpca; do
    [[ -f $OUT/$f.log ]] && echo "== $f" && tail -25 "$OUT/$f.log"
  done
  for stage in $STAGES; do
    [[ $stage == family-* && -f $OUT/$stage.log ]] && echo "== $stage" && tail -4 "$OUT/$stage.log"
  done
} | tee "$OUT/summary.txt"
(
  cd "$OUT" || exit 0
  keep=(summary.txt kernels/pairwise_cuda.json kernels/fp64tc.json kernels/_tuning.json train.json inpca_gpu.json)
  for stage in $STAGES; do [[ $stage == family-* ]] && keep+=("$stage/results.json" "$stage/summary.png"); done
  find . -name store.tar -delete
  find . -type f | sed 's|^\./||' | sort >/tmp/taskgeom_out_files
  printf '%s\n' "${keep[@]}" | sort >/tmp/taskgeom_keep_files
  comm -23 /tmp/taskgeom_out_files /tmp/taskgeom_keep_files >/tmp/taskgeom_pack_files
  tar czf /tmp/taskgeom_rest.tgz -T /tmp/taskgeom_pack_files 2>/dev/null && xargs -d '\n' rm -f </tmp/taskgeom_pack_files
  mv /tmp/taskgeom_rest.tgz rest.tgz
  find . -type d -empty -delete
  echo "back: $(find . -type f | wc -l) files, $(du -sh . | cut -f1)"
)
