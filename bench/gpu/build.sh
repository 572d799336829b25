#!/usr/bin/env bash
# Builds the binaries bench/gpu/run.sh runs on the GPU machine, stripped, into
# bench/gpu/bin (ignored by git; carry it with the run). Needs the CUDA
# toolkit of `cargo xtask cuda-setup` (run that first; on a machine without a
# GPU: cargo xtask cuda-setup --cuda 13.0 --compute-cap 9.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
. .venv-cuda/cuda-env.sh
export CARGO_TARGET_DIR=target/cuda CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --features cuda -p xtask
cargo test --release --features cuda -p caf-e2e --test cuda_parity --no-run --message-format=json \
    | sed -n 's/.*"executable":"\([^"]*cuda_parity[^"]*\)".*/\1/p' > target/cuda/parity-path
mkdir -p bench/gpu/bin
cp target/cuda/release/xtask bench/gpu/bin/
cp "$(tail -1 target/cuda/parity-path)" bench/gpu/bin/cuda_parity
du -sh bench/gpu/bin
