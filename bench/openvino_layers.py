"""OpenVINO's own time per layer for the network `cargo xtask bench --compare-onnx` runs.

The same network as `onnx_bench.py` (exported to ONNX the same way), compiled by OpenVINO for
the CPU with its performance counters on, run on random images; prints, for the fastest of
`--runs` passes, each layer's time in milliseconds, its type and the kernel OpenVINO chose
(`brgconv_avx512_amx_bf16` is a convolution on the AMX tiles), then the pass's wall time. Set
beside `cargo run --release -p caf-kernels --example conv_speed -- --frozen --precision bf16
--batch 64` to see which layers a gap comes from. Needs torch, torchvision, onnx and openvino;
nothing in the tests uses it:

    python bench/openvino_layers.py --arch resnet18 --batch 64 --precision bf16 --threads 2
"""

import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import onnx_bench  # noqa: E402


def main():
    parser = onnx_bench.per_layer_parser(__doc__.splitlines()[0], batch=64, runs=5)
    parser.add_argument("--precision", choices=["f32", "bf16"], default="bf16")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import openvino as ov

    with tempfile.TemporaryDirectory() as folder:
        path = onnx_bench.export(args.arch, args.size, folder)
        config = {
            "INFERENCE_NUM_THREADS": args.threads,
            "INFERENCE_PRECISION_HINT": args.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "PERF_COUNT": True,
        }
        compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    images = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
    request.infer({0: images})
    fastest = None
    for _ in range(args.runs):
        start = time.perf_counter()
        request.infer({0: images})
        seconds = time.perf_counter() - start
        if fastest is None or seconds < fastest[0]:
            layers = [(p.real_time.total_seconds() * 1e3, p.node_type, p.exec_type, p.node_name)
                      for p in request.get_profiling_info()]
            fastest = (seconds, layers)
    seconds, layers = fastest
    for ms, node_type, kernel, name in layers:
        if ms >= 0.05:
            print(f"{ms:8.2f} ms  {node_type:15} {kernel:28} {name}")
    print(f"{sum(layer[0] for layer in layers):8.2f} ms  in the layers; the pass took {seconds * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
