#!/usr/bin/env bash
# Builds the binaries bench/gpu/run.sh runs on the GPU machine, stripped, into
# bench/gpu/bin and packs them into bench/gpu/bin.tar.xz (both ignored by git;
# carry the archive with the run). Needs the CUDA
# toolkit of `cargo xtask cuda-setup` (run that first; on a machine without a
# GPU: cargo xtask cuda-setup --cuda 13.0 --compute-cap 9.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv-cuda/cuda-env.sh
export CARGO_TARGET_DIR=target/cuda CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --features cudnn -p xtask
cargo build --release --features cudnn -p caf-kernels --example conv_speed
# caf-kernels' CUDA kernels must compile and cuDNN must take every layer's
# descriptors; neither needs a GPU, so check here (the driver stub stands in
# for libcuda.so.1, which is loaded at start).
ln -sf libcuda.so .venv-cuda/cuda-stub/libcuda.so.1
LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/.venv-cuda/cuda-stub" \
    cargo test --release --features cudnn -p caf-kernels --lib -- cuda::tests conv::cudnn
cargo test --release --features cudnn -p caf-e2e --test cuda_parity --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*cuda_parity[^"]*\)".*/\1/p' > target/cuda/parity-path
mkdir -p bench/gpu/bin
cp target/cuda/release/xtask target/cuda/release/examples/conv_speed bench/gpu/bin/
cp "$(tail -1 target/cuda/parity-path)" bench/gpu/bin/cuda_parity
du -sh bench/gpu/bin
# A GPU session carries at most 64 MiB: carry this archive instead of bin/
# (run.sh unpacks it when bin/ is absent).
tar -C bench/gpu -cf - bin | xz -T0 -6 > bench/gpu/bin.tar.xz
du -sh bench/gpu/bin.tar.xz
