#!/usr/bin/env bash
# Every GPU check and timing in one run, on a machine that has the GPU but no
# Rust toolchain. Build here first (bench/gpu/build.sh), carry bench/gpu/bin,
# then on the GPU machine:
#   OUT=/some/folder bash bench/gpu/run.sh
# Writes everything under $OUT: parity test output, the benchmark's JSON and
# table beside PyTorch's (default TF32 and strict f32), and the device's facts.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder the results go to}
BIN=bench/gpu/bin
mkdir -p "$OUT"

# The CUDA libraries of the machine's own PyTorch (cuBLAS, cuRAND, NVRTC, cuDNN).
PY=${PYTHON:-python3}
SITE=$($PY -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
for dir in "$SITE"/nvidia/*/lib; do LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
status=0

echo "== parity (CUDA against the CPU kernels)"
timeout 300 "$BIN/cuda_parity" --test-threads 1 > "$OUT/cuda_parity.txt" 2>&1 || status=1
tail -3 "$OUT/cuda_parity.txt"

echo "== benchmark beside PyTorch (TF32 as PyTorch defaults)"
timeout 300 "$BIN/xtask" bench --device cuda --compare-torch --python "$PY" --json > "$OUT/bench-cuda.json" 2> "$OUT/bench-cuda.log" || status=1
echo "== the same with TF32 off on PyTorch's side"
NVIDIA_TF32_OVERRIDE=0 timeout 300 "$BIN/xtask" bench --device cuda --compare-torch --python "$PY" --json > "$OUT/bench-cuda-strict.json" 2> "$OUT/bench-cuda-strict.log" || status=1

echo "== the paper's batch sizes (AlexNet 256, ResNet-18 128) beside PyTorch"
timeout 300 "$BIN/xtask" bench --device cuda --arch alexnet --batch 256 --compare-torch --python "$PY" --json > "$OUT/bench-cuda-alexnet-256.json" 2> "$OUT/bench-cuda-alexnet-256.log" || status=1
timeout 300 "$BIN/xtask" bench --device cuda --arch resnet18 --batch 128 --compare-torch --python "$PY" --json > "$OUT/bench-cuda-resnet18-128.json" 2> "$OUT/bench-cuda-resnet18-128.log" || status=1

echo "== face detection (beside facenet-pytorch when that Python has it)"
timeout 120 "$BIN/xtask" bench --detection --device cuda --compare-torch --python "$PY" --json > "$OUT/bench-detection-cuda.json" 2> "$OUT/bench-detection-cuda.log" \
  || timeout 120 "$BIN/xtask" bench --detection --device cuda --json > "$OUT/bench-detection-cuda.json" 2>> "$OUT/bench-detection-cuda.log" || status=1

echo "== a short training run on the built-in data"
timeout 120 "$BIN/xtask" train --device cuda --epochs 2 --output "$OUT/train" > "$OUT/train.txt" 2>&1 || status=1
tail -4 "$OUT/train.txt"
exit $status
