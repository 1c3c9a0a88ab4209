#!/usr/bin/env bash
# One command that checks mmh on any CUDA machine, with the torch already installed there and no network:
#
#   bash scripts/gpu_check.sh [OUT_DIR]          (default OUT_DIR: gpu_check_out/<date-time>)
#
# OUT_DIR must be new, empty or an earlier gpu_check folder (whose results are cleared first).
#   1. build     mmh_ext against that torch: pip install --no-build-isolation --no-deps --no-index -e . with
#                TORCH_CUDA_ARCH_LIST = this GPU's compute capability only, MAX_JOBS = the cores, CUDA_HOME from nvcc
#   2. in parallel (none of them is timed):
#      tests     pytest tests/ops/test_cuda.py (CUDA vs CPU kernels in fp32/fp16/bf16, gradients, mixed dtypes and
#                autocast, opcheck, torch.compile, CUDA graphs, mixed devices); any skipped test counts as a failure
#      memcheck  scripts/gpu_ops_smoke.py under compute-sanitizer --tool memcheck (mmh_ext kernels, no caching
#      racecheck allocator) and under --tool racecheck
#      train     `mmh benchmark mmh --quick` on CUDA (train.amp auto = fp16 + GradScaler), then one thesis stage with
#                the injection (thesis/multistream, short, train.amp=bf16)
#   3. bench     benchmarks/bench_ops.py --device cuda (alone on the GPU): eager / torch.compile / mmh_ext, peak
#                memory, cupy ElementwiseKernel and copy bandwidth for the injection; the targets met or missed
#   4. OUT_DIR/summary.md: the machine, each section's result, the benchmark table and targets. Everything else is
#      in OUT_DIR too: gpu_check.log (every section's output), bench_ops.csv, logs/, train/, test_cuda.xml.
#
# Exit status: 0 every section passed and every target met; 1 a section failed (or was not run); 3 every section
# passed but a benchmark target was missed or not measured; 2 torch sees no CUDA device (checked first, nothing
# is built).
# Environment: PYTHON (default: python3, else python — the one with torch), GPU_CHECK_BUDGET_S (wall-clock budget,
# default 450: each section's time limit is cut to what is left, the benchmark keeps 150 s), GPU_CHECK_SKIP_BUILD=1
# (use the mmh_ext already built), GPU_CHECK_ALLOW_NO_CUDA=1 (only to test this script on a machine without a GPU:
# runs every section on the CPU — tests in MMH_CUDA_TESTS_ON_CPU mode, no sanitizer, --quick benchmark).
set -u
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
T0=$(date +%s)

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu_check: no python with torch found (set PYTHON)" >&2
  exit 2
fi

# ------------------------------------------------------------------------------------------------- 0. a GPU?
DEVICE=cuda
msg=$("$PY" -c 'import sys, torch
if torch.cuda.is_available() and torch.cuda.device_count() > 0:
    sys.exit(0)
cuda = torch.version.cuda or "no"
print(f"gpu_check: torch {torch.__version__} (CUDA build: {cuda}) sees no CUDA device; nothing to check")
sys.exit(1)' 2>&1)
if [ $? -ne 0 ]; then
  if [ "${GPU_CHECK_ALLOW_NO_CUDA:-0}" != 1 ]; then
    echo "${msg:-gpu_check: torch sees no CUDA device}" | tail -n 1 >&2
    exit 2
  fi
  DEVICE=cpu
fi

OUT=${1:-gpu_check_out/$(date +%Y%m%d-%H%M%S)}
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ] && [ ! -f "$OUT/gpu_check.log" ]; then
  echo "gpu_check: $OUT exists and is not an earlier gpu_check folder: give an empty or new OUT_DIR" >&2
  exit 1
fi
mkdir -p "$OUT/logs" "$OUT/.status" || { echo "gpu_check: cannot create $OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
: > "$LOG"
rm -rf "$OUT"/.status/* "$OUT"/logs/* "$OUT/train"  # nothing from an earlier run in the same folder is reported
rm -f "$OUT"/{summary.md,bench_ops.csv,bench_ops.md,test_cuda.xml,machine.txt}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
DEADLINE=$((T0 + BUDGET))
BENCH_RESERVE=150
CAP_SCALE=1
[ "$DEVICE" = cpu ] && CAP_SCALE=10  # testing the script on a (slow) CPU machine: only the budget limits sections
CORES=$(nproc 2>/dev/null || echo 4)
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { echo "[gpu_check $(date +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }

# run_section NAME CAP_S RESERVE_S CMD...: runs CMD with a time limit of min(CAP_S, time left - RESERVE_S), its
# output in logs/NAME.log (appended to gpu_check.log when it ends); writes .status/NAME = "status<TAB>secs<TAB>note".
run_section() {
  local name=$1 cap=$2 reserve=$3; shift 3
  local left=$((DEADLINE - $(date +%s) - reserve)) limit rc start secs status note=""
  cap=$((cap * CAP_SCALE))
  limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 15 ]; then
    printf 'FAIL\t0\tnot run: the time budget (GPU_CHECK_BUDGET_S=%s) is spent\n' "$BUDGET" > "$OUT/.status/$name"
    say "$name: NOT RUN (time budget spent)"
    return 1
  fi
  say "$name: start (limit ${limit}s): $*"
  start=$(date +%s)
  # a child bash runs the exported functions below; timeout ends its whole process group
  timeout --kill-after=15 "$limit" bash -c 'set -u -o pipefail; "$@"' "$name" "$@" > "$OUT/logs/$name.log" 2>&1 \
    < /dev/null
  rc=$?
  secs=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then status=PASS; else status=FAIL; fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then note="timed out after ${limit}s"; elif [ $rc -ne 0 ]; then note="exit status $rc"; fi
  if [ -f "$OUT/.status/$name.note" ]; then note="${note:+$note; }$(cat "$OUT/.status/$name.note")"; fi
  printf '%s\t%s\t%s\n' "$status" "$secs" "$note" > "$OUT/.status/$name"
  { echo; echo "==================== $name ($status, ${secs}s${note:+, $note}) ===================="
    cat "$OUT/logs/$name.log"; } >> "$LOG"
  say "$name: $status in ${secs}s${note:+ ($note)}"
  return $rc
}
skip_section() {  # NAME STATUS NOTE: a section that cannot run here
  printf '%s\t0\t%s\n' "$2" "$3" > "$OUT/.status/$1"
  say "$1: $2 ($3)"
}

say "mmh GPU check: device $DEVICE, python $PY, $CORES cores, budget ${BUDGET}s, output $OUT"

# ------------------------------------------------------------------------------------------------ machine facts
cuda_home() {  # nvcc may be a wrapper script (as on our machines): the toolkit root it really runs
  if [ -n "${CUDA_HOME:-}" ]; then echo "$CUDA_HOME"; return; fi
  local nv real=""
  nv=$(command -v nvcc 2>/dev/null) || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda; return; }
  if [ "$(head -c 2 "$nv" 2>/dev/null)" = "#!" ]; then  # a script: the nvcc it execs
    real=$(grep -oE '/[^" ]+/bin/nvcc' "$nv" 2>/dev/null | head -n 1)
  fi
  [ -n "$real" ] && [ -x "$real" ] || real=$(readlink -f "$nv")
  echo "${real%/bin/nvcc}"
}
CUDA_HOME_FOUND=$(cuda_home)
SANITIZER=""
for s in "$(command -v compute-sanitizer 2>/dev/null)" "$CUDA_HOME_FOUND/bin/compute-sanitizer" \
         "$CUDA_HOME_FOUND/compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
         /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer \
         /opt/nvidia/compute-sanitizer/compute-sanitizer; do
  if [ -n "$s" ] && [ -x "$s" ]; then SANITIZER=$s; break; fi
done
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(uname -srm)"
  echo "cpu cores: $CORES"
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)"
  "$PY" -c 'import torch
print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, f"(compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB,",
          p.multi_processor_count, "SMs)", "x", torch.cuda.device_count())' 2>&1
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>&1 | head -n 1)"
  else
    echo "driver: (no nvidia-smi)"
  fi
  echo "nvcc: $( [ -n "$CUDA_HOME_FOUND" ] && "$CUDA_HOME_FOUND/bin/nvcc" --version 2>&1 | grep -i release | head -n 1 || echo 'not found') (CUDA_HOME=${CUDA_HOME_FOUND:-none})"
  echo "compute-sanitizer: ${SANITIZER:-not found}$( [ -n "$SANITIZER" ] && "$SANITIZER" --version 2>&1 | grep -i version | head -n 1 | sed 's/^/ — /')"
  echo "cupy: $("$PY" -c 'import cupy; print(cupy.__version__)' 2>/dev/null || echo 'not installed')"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" | tee -a "$LOG"

# ----------------------------------------------------------------------------------------------------- 1. build
build() {
  if [ "$DEVICE" = cuda ]; then
    local arch
    arch=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))') || return 1
    export TORCH_CUDA_ARCH_LIST=$arch MMH_EXT_FORCE_CUDA=1
    unset MMH_EXT_NO_CUDA
    [ -n "$CUDA_HOME_FOUND" ] && export CUDA_HOME=$CUDA_HOME_FOUND
  else
    export MMH_EXT_NO_CUDA=1
    unset MMH_EXT_FORCE_CUDA TORCH_CUDA_ARCH_LIST
  fi
  export MAX_JOBS=$CORES
  echo "building mmh_ext: TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} MAX_JOBS=$MAX_JOBS CUDA_HOME=${CUDA_HOME:-} python=$PY"
  if ! "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . 2>&1 | tee "$OUT/logs/pip.log"; then
    if grep -qiE 'read-only file system|permission denied' "$OUT/logs/pip.log"; then
      # the environment is not writable: build in place and import from the checkout instead
      echo "pip cannot write to this environment: building in place (python setup.py build_ext --inplace)"
      echo "built in place (environment not writable): PYTHONPATH=$ROOT/python:$ROOT" > "$OUT/.status/build.note"
      "$PY" setup.py build_ext --inplace -j "$MAX_JOBS" || return 1
    else
      return 1
    fi
  fi
  echo "--- python -m mmh_ext.info"
  (cd "$OUT" && PYTHONPATH="$ROOT/python:$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m mmh_ext.info) || return 1
  if [ "$DEVICE" = cuda ]; then  # the build must hold the CUDA kernels for this GPU
    (cd "$OUT" && PYTHONPATH="$ROOT/python:$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import sys, mmh_ext
info = mmh_ext.BUILD_INFO
ok = info.get("cuda_kernels") == "1" and info.get("cuda_archs") == sys.argv[1]
print("CUDA kernels for", info.get("cuda_archs"), "(wanted", sys.argv[1] + "):", "yes" if ok else "NO")
sys.exit(0 if ok else 1)' "$TORCH_CUDA_ARCH_LIST") || return 1
  fi
}
# ----------------------------------------------------------------------------------- 2. tests, sanitizer, training
tests() {
  local env=() xml=$OUT/test_cuda.xml
  [ "$DEVICE" = cpu ] && env=(MMH_CUDA_TESTS_ON_CPU=1)
  env "${env[@]}" "$PY" -m pytest -q -rs -p no:cacheprovider tests/ops/test_cuda.py --junitxml="$xml"
  local rc=$?
  "$PY" - "$xml" "$DEVICE" > "$OUT/.status/tests.note" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception as exc:  # noqa: BLE001
    print(f"no junit report ({type(exc).__name__})"); sys.exit(1)
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print(f"{n['tests']} tests: {n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, {n['failures']} failed, "
      f"{n['errors']} errors, {n['skipped']} skipped")
sys.exit(1 if (n["skipped"] and sys.argv[2] == "cuda") or n["tests"] == 0 else 0)
EOF
  local note_rc=$?
  if [ $note_rc -ne 0 ] && [ $rc -eq 0 ]; then
    echo "tests were skipped on a GPU machine (or none ran): counted as a failure"
    rc=1
  fi
  return $rc
}

sanitize() {  # TOOL
  local tool=$1 extra=()
  [ "$tool" = memcheck ] && extra=(--padding 256 --leak-check no)
  # only mmh_ext's kernels are instrumented (torch's and cuBLAS's are not ours); failing CUDA API calls that torch
  # makes on purpose (probing) are not reported; without the caching allocator every tensor is its own allocation
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" "${extra[@]}" --kernel-name kns=mmh_ext \
    --report-api-errors no --target-processes application-only --error-exitcode 97 --print-limit 50 \
    "$PY" scripts/gpu_ops_smoke.py --device cuda
}

train() {
  local dev=$DEVICE quick_steps=() workers=$(( CORES >= 12 ? 6 : 2 ))
  [ "$DEVICE" = cpu ] && quick_steps=(--steps 10 --no-antispoof)
  echo "--- mmh benchmark mmh --quick on $dev (train.amp=auto)"
  "$PY" -m mmh.cli benchmark mmh --quick --workers "$workers" --out "$OUT/train/main_quick" "${quick_steps[@]}" \
    "device=$dev" train.amp=auto || return 1
  [ -s "$OUT/train/main_quick/results.json" ] || { echo "no results.json from the main job"; return 1; }
  local amp=bf16 steps=40
  [ "$DEVICE" = cpu ] && steps=3 amp=auto
  echo "--- mmh train thesis/multistream (cross-stream injection) on $dev, train.amp=$amp, train.steps=$steps"
  "$PY" -m mmh.cli train thesis/multistream "device=$dev" "train.amp=$amp" "train.steps=$steps" \
    train.progress=false "output.root=$OUT/train/thesis" --run-dir "$OUT/train/thesis/multistream" || return 1
  [ -s "$OUT/train/thesis/multistream/results.json" ] || { echo "no results.json from the thesis stage"; return 1; }
}

export -f build tests sanitize train
export OUT DEVICE PY ROOT CORES CUDA_HOME_FOUND SANITIZER
BUILD_OK=1
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  if "$PY" -m mmh_ext.info >> "$LOG" 2>&1; then
    skip_section build PASS "skipped (GPU_CHECK_SKIP_BUILD=1): the existing build is used"
  else
    skip_section build FAIL "GPU_CHECK_SKIP_BUILD=1 but mmh_ext does not import (gpu_check.log)"
    BUILD_OK=0
  fi
else
  run_section build 300 $((BENCH_RESERVE + 60)) build || BUILD_OK=0
fi
if grep -qs "built in place" "$OUT/.status/build.note"; then  # later steps import mmh and mmh_ext from the checkout
  export PYTHONPATH="$ROOT/python:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---------------------------------------------------------------- run: build, then tests / sanitizer / training
if [ $BUILD_OK = 1 ]; then
  PHASE_RESERVE=$BENCH_RESERVE
  run_section tests 240 $PHASE_RESERVE tests &
  pid_tests=$!
  if [ "$DEVICE" != cuda ]; then
    skip_section memcheck SKIP "no GPU (GPU_CHECK_ALLOW_NO_CUDA)"
    skip_section racecheck SKIP "no GPU (GPU_CHECK_ALLOW_NO_CUDA)"
    pid_san=""
  elif [ -z "$SANITIZER" ]; then
    skip_section memcheck FAIL "compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /opt/nvidia)"
    skip_section racecheck FAIL "compute-sanitizer not found"
    pid_san=""
  else
    ( run_section memcheck 180 $PHASE_RESERVE sanitize memcheck; run_section racecheck 150 $PHASE_RESERVE sanitize racecheck ) &
    pid_san=$!
  fi
  run_section train 240 $PHASE_RESERVE train &
  pid_train=$!
  wait $pid_tests $pid_train ${pid_san:+$pid_san}

  # --------------------------------------------------------------------------------------------------- 3. bench
  # the benchmark's own budget ends 30 s before its section's limit (300 s at most, or what is left), so that it
  # finishes its table (the GPU kernel-time pass included) before it is stopped
  bench_left=$((DEADLINE - $(date +%s)))
  [ "$bench_left" -gt $((300 * CAP_SCALE)) ] && bench_left=$((300 * CAP_SCALE))
  bench_args=(--device "$DEVICE" --csv "$OUT/bench_ops.csv" --time-budget $((bench_left - 30)))
  [ "$DEVICE" = cpu ] && bench_args+=(--quick --min-run-time 0.05)
  run_section bench 300 0 "$PY" benchmarks/bench_ops.py "${bench_args[@]}"
else
  for s in tests memcheck racecheck train bench; do skip_section $s FAIL "not run: the build failed"; done
fi

# ------------------------------------------------------------------------------------------------- 4. summary
BENCH_MD=$OUT/bench_ops.md
rm -f "$BENCH_MD"
if [ -s "$OUT/bench_ops.csv" ]; then
  "$PY" benchmarks/bench_ops.py --from-csv "$OUT/bench_ops.csv" --markdown "$BENCH_MD" > /dev/null 2>> "$LOG" || true
fi
"$PY" scripts/gpu_summary.py "$OUT" > /dev/null 2>> "$LOG"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then rc=1; fi
if [ ! -s "$OUT/summary.md" ]; then  # the summary script itself failed: the bare results
  { echo "# mmh GPU check (summary script failed: see gpu_check.log)"; echo; cat "$OUT/machine.txt"; echo
    for f in "$OUT"/.status/*; do case $f in *.note) continue;; esac; echo "- $(basename "$f"): $(cat "$f")"; done
  } > "$OUT/summary.md"
  rc=1
fi
say "done in $(( $(date +%s) - T0 ))s: $OUT/summary.md (exit status $rc)"
echo
cat "$OUT/summary.md"
exit $rc
