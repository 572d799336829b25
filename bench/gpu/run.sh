#!/usr/bin/env bash
# Every GPU check and timing, on a machine that has the GPU but no Rust
# toolchain. Build here first (bench/gpu/build.sh), carry
# bench/gpu/bin.tar.xz, then on the GPU machine:
#   OUT=/some/folder bash bench/gpu/run.sh            # every stage
#   OUT=/some/folder bash bench/gpu/run.sh parity bench   # some stages
# Stages: parity, candle (the convolutions on candle's CUDA path instead of
# cuDNN, CAF_CUDNN=off: parity and batch 16), convs (every AlexNet and
# ResNet-18 convolution shape, forward and both gradients, at batch 16 and the
# paper's batch, beside PyTorch's cuDNN), bench, bf16 (batch 16 and each
# convolution shape under --precision bf16, beside PyTorch's autocast), setup
# (batch 16 on the
# device as candle opens it, CAF_CUDA_SETUP=off: its per-thread stream, an
# event pair per buffer, the driver's pool as it is), paper (the paper's
# batch sizes), detection, train, large (a larger generated set at 224 px),
# cpu (the host CPU, not in the default list: bf16 beside PyTorch autocast at
# 2 threads and at every core, each side given the same count; on AMX hosts
# the tiles' one comparison). Each writes under $OUT; together they take
# more than one 10-minute call, so run them in two or three calls:
#   parity convs candle | bench bf16 setup paper | detection train large
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder the results go to}
BIN=bench/gpu/bin
mkdir -p "$OUT"
[ -x "$BIN/xtask" ] || tar -C bench/gpu -xJf bench/gpu/bin.tar.xz || { echo "no $BIN and no bench/gpu/bin.tar.xz: run bench/gpu/build.sh here first"; exit 1; }
STAGES=${*:-parity convs candle bench bf16 setup paper detection train large}

# The CUDA libraries of the machine's own PyTorch (cuBLAS, cuRAND, NVRTC, cuDNN).
PY=${PYTHON:-python3}
SITE=$($PY -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
for dir in "$SITE"/nvidia/*/lib; do LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
status=0
bench() { # name, timeout, bench arguments...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$BIN/xtask" bench --device cuda "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.log" || status=1
  tail -12 "$OUT/$name.log"
}

for stage in $STAGES; do
  echo "== $stage"
  case $stage in
    parity) # CUDA against the CPU kernels, every test
      timeout 300 "$BIN/cuda_parity" --test-threads 1 > "$OUT/cuda_parity.txt" 2>&1 || status=1
      grep -E "^test |test result" "$OUT/cuda_parity.txt" ;;
    convs) # each convolution shape: ours, then PyTorch's on the same shapes
      for run in "16 alexnet" "16 resnet" "256 alexnet" "128 resnet"; do
        set -- $run
        timeout 120 "$BIN/conv_speed" --device cuda --batch "$1" --layer "$2" --json >> "$OUT/convs-ours.jsonl" 2>> "$OUT/convs.log" || status=1
      done
      timeout 180 "$PY" bench/gpu/conv_shapes.py "$OUT/convs-ours.jsonl" --device cuda --out "$OUT/convs.json" \
        2>> "$OUT/convs.log" | tee "$OUT/convs.txt" || status=1
      tail -5 "$OUT/convs.log" ;;
    candle) # today's route without cuDNN, for the comparison
      CAF_CUDNN=off timeout 300 "$BIN/cuda_parity" --test-threads 1 > "$OUT/cuda_parity_candle.txt" 2>&1 || status=1
      grep -E "test result" "$OUT/cuda_parity_candle.txt"
      CAF_CUDNN=off bench bench-cuda-candle 240 --compare-torch --python "$PY" ;;
    bench) # batch 16 beside PyTorch: its default TF32, then strict f32
      bench bench-cuda 240 --compare-torch --python "$PY"
      NVIDIA_TF32_OVERRIDE=0 bench bench-cuda-strict 240 --compare-torch --python "$PY" ;;
    bf16) # mixed precision: ours under --precision bf16, PyTorch under autocast
      bench bench-cuda-bf16 240 --precision bf16 --compare-torch --python "$PY"
      for arch in alexnet resnet; do
        timeout 120 "$BIN/conv_speed" --device cuda --batch 16 --layer "$arch" --precision bf16 --json >> "$OUT/convs-bf16-ours.jsonl" 2>> "$OUT/convs-bf16.log" || status=1
      done
      timeout 180 "$PY" bench/gpu/conv_shapes.py "$OUT/convs-bf16-ours.jsonl" --device cuda --out "$OUT/convs-bf16.json" \
        2>> "$OUT/convs-bf16.log" | tee "$OUT/convs-bf16.txt" || status=1 ;;
    setup) # candle's default device, against bench's figures
      CAF_CUDA_SETUP=off bench bench-cuda-default-device 240 ;;
    paper) # the paper's batch sizes beside PyTorch
      bench bench-cuda-alexnet-256 240 --arch alexnet --batch 256 --compare-torch --python "$PY"
      bench bench-cuda-resnet18-128 240 --arch resnet18 --batch 128 --compare-torch --python "$PY" ;;
    detection) # beside facenet-pytorch when that Python has it
      bench bench-detection-cuda 120 --detection --compare-torch --python "$PY" \
        || bench bench-detection-cuda 120 --detection ;;
    train) # the built-in data, two epochs
      timeout 120 "$BIN/xtask" train --device cuda --epochs 2 --output "$OUT/train" > "$OUT/train.txt" 2>&1 || status=1
      grep -E "images_per_s|validation" "$OUT/train.txt" | tail -4 ;;
    large) # 200 people × 200 images at 256 px, AlexNet at 224 and the paper's batch, one epoch
      data=${TMPDIR:-/tmp}/caf-large
      timeout 200 "$BIN/xtask" make-data --subjects 200 --images-per-subject 200 --size 256 --jpeg --out "$data" > "$OUT/large-data.txt" 2>&1 || status=1
      timeout 300 "$BIN/xtask" train --device cuda --output "$OUT/large" \
        --set data.dir="$data" --set data.subjects=200 --set data.images_per_subject=200 --set data.size=256 \
        --set image_size=224 --set resize=256 --set batch_size=256 --set epochs=1 --set workers=14 \
        > "$OUT/large.txt" 2>&1 || status=1
      grep -E "images_per_s|images/s" "$OUT/large.txt" | tail -3 ;;
    cpu) # the host CPU (AMX where it has it), bf16, at 2 threads and at every core
      for threads in 2 "$(nproc)"; do
        RAYON_NUM_THREADS=$threads timeout 240 "$BIN/xtask" bench --precision bf16 --compare-torch --python "$PY" --json \
          > "$OUT/cpu-bf16-$threads-threads.json" 2> "$OUT/cpu-bf16-$threads-threads.log" || status=1
        tail -12 "$OUT/cpu-bf16-$threads-threads.log"
      done ;;
    *) echo "unknown stage $stage"; status=1 ;;
  esac
done
exit $status
