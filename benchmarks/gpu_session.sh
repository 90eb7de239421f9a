#!/usr/bin/env bash
# One GPU session for issue 19, under 10 minutes on a machine with an NVIDIA GPU and ~16 cores:
#   bash benchmarks/gpu_session.sh [OUT_DIR]        (OUT_DIR defaults to $OUT, else ./gpu-session)
# 1. the CUDA tests (tests/test_cuda.py: the copy chosen, agreement with the CPU, pinned copies, crop workers)
# 2. benchmarks/run.py --device cuda: the network alone per precision and layout, the 40,000 cell-frame movie
#    end to end per crop_workers and chunk size, start-up of classify on the GPU, the cost of the output
# 3. benchmarks/run.py --only cores: the network alone and end to end on 1, 2 and all CPUs
# Everything goes to OUT_DIR (JSON and logs); each step has its own time limit, so a slow step costs its
# own figures only. Needs the project importable (PYTHONPATH=src or an install) and its test dependencies.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-session}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
export PYTHONPATH="${PYTHONPATH:-}${PYTHONPATH:+:}$(pwd)/src"
export NAPARI_YEAST_PHENOTYPES_CACHE="$OUT_DIR/cache"   # the check remembered in this session only
{
  date -u; uptime; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} > "$OUT_DIR/machine.txt" 2>&1
cat "$OUT_DIR/machine.txt"

echo "== 1/3 CUDA tests (limit 90 s)"
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT_DIR/test_cuda.log" 2>&1
echo "exit $?"; tail -3 "$OUT_DIR/test_cuda.log"

echo "== 2/3 benchmarks/run.py --device cuda (limit 300 s)"
timeout 300 "$PY" benchmarks/run.py --device cuda --out "$OUT_DIR/results-gpu-cuda.json" \
  > "$OUT_DIR/cuda.out" 2> "$OUT_DIR/cuda.err"
echo "exit $?"; cat "$OUT_DIR/cuda.out"

echo "== 3/3 benchmarks/run.py --only cores (limit 180 s)"
timeout 180 "$PY" benchmarks/run.py --only cores --out "$OUT_DIR/results-gpu-cores.json" \
  > "$OUT_DIR/cores.out" 2> "$OUT_DIR/cores.err"
echo "exit $?"; cat "$OUT_DIR/cores.out"
