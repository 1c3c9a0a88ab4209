"""The GPU check: one command that checks mmh on any CUDA machine, with the torch already installed there and no
network::

    bash scripts/gpu_check.sh [OUT_DIR]       (default OUT_DIR: gpu_check_out/<date-time>)
    python -m benchmarks.gpu_check [OUT_DIR]  (the same, from the checkout root, with the python that has torch)

OUT_DIR must be new, empty or an earlier gpu_check folder (whose results are cleared first).
  1. build     mmh_ext against that torch: pip install --no-build-isolation --no-deps --no-index -e . with
               TORCH_CUDA_ARCH_LIST = this GPU's compute capability only, MAX_JOBS = the cores, CUDA_HOME from nvcc
  2. side by side (none of them is timed):
     tests     pytest tests/ops/test_cuda.py (CUDA vs CPU kernels in fp32/fp16/bf16, gradients, mixed dtypes and
               autocast, opcheck, torch.compile, CUDA graphs, mixed devices); any skipped test counts as a failure
     memcheck  scripts/gpu_ops_smoke.py under compute-sanitizer --tool memcheck (mmh_ext kernels, no caching
     racecheck allocator), then under --tool racecheck
     train     `mmh benchmark mmh --quick` on CUDA (train.amp auto = fp16 + GradScaler), then one thesis stage with
               the injection (thesis/multistream, short, train.amp=bf16), then `mmh benchmark speed` (the training
               step at the papers' sizes with train.amp=auto: samples/s and the per-phase split, train/speed/)
  3. bench     benchmarks/bench_ops.py --device cuda (alone on the GPU): eager / torch.compile / mmh_ext, peak
               memory, cupy ElementwiseKernel and copy bandwidth for the injection; the targets met or missed
  4. OUT_DIR/summary.md: the machine, each section's result, the benchmark table and targets. Everything else is
     in OUT_DIR too: gpu_check.log (every section's output), bench_ops.csv, logs/, train/, test_cuda.xml.

Exit status: 0 every section passed and every target met; 1 a section failed (or was not run); 3 every section
passed but a benchmark target was missed or not measured; 2 torch sees no CUDA device (checked first, nothing is
built or written).

Environment: PYTHON (for scripts/gpu_check.sh; default: python3, else python — the one with torch),
GPU_CHECK_BUDGET_S (wall-clock budget in whole seconds, default 450: each section's time limit is cut to what is
left, the benchmark keeps 150 s; see :mod:`benchmarks.gpu_check.budget`), GPU_CHECK_SKIP_BUILD=1 (use the mmh_ext
already built), GPU_CHECK_ALLOW_NO_CUDA=1 (only to test the check on a machine without a GPU: runs every section on
the CPU — tests in MMH_CUDA_TESTS_ON_CPU mode, no sanitizer, --quick benchmark).

Modules: :mod:`~benchmarks.gpu_check.check` (orchestration), :mod:`~benchmarks.gpu_check.budget` (time limits),
:mod:`~benchmarks.gpu_check.sections` (each section's commands), :mod:`~benchmarks.gpu_check.machine` (machine facts,
CUDA tools), :mod:`~benchmarks.gpu_check.summary` (summary.md), :mod:`~benchmarks.gpu_check.ops_smoke` (the
sanitizer's op script).
"""
