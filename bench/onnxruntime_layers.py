"""ONNX Runtime's own time per node for the network `cargo xtask bench --compare-onnx` runs.

The same network as `onnx_bench.py` (exported to ONNX the same way, the same session settings),
run on random images with ONNX Runtime's profiler on; prints, for each node of the graph it
optimised (its fused convolutions), the median of its times over `--runs` passes in
milliseconds, its operator and the kernel's input shape, then the median pass. Set beside
`cargo run --release -p caf-kernels --example conv_speed -- --frozen --batch 1` to see which
layers a gap comes from. Needs torch, torchvision, onnx and onnxruntime; nothing in the tests
uses it:

    python bench/onnxruntime_layers.py --arch resnet18 --batch 1 --threads 2
"""

import collections
import json
import os
import statistics
import sys
import tempfile
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import onnx_bench  # noqa: E402


def main():
    parser = onnx_bench.per_layer_parser(__doc__.splitlines()[0], batch=1, runs=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        path = onnx_bench.export(args.arch, args.size, folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        images = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
        # The medians leave the first, slower passes out.
        for _ in range(args.runs):
            session.run(None, {"images": images})
        with open(session.end_profiling()) as file:
            events = json.load(file)
    nodes = collections.OrderedDict()
    passes = []
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            args_ = event.get("args", {})
            name = event["name"][: -len("_kernel_time")]
            shapes = args_.get("input_type_shape", [{}])
            shape = next(iter(shapes[0].values()), []) if shapes else []
            node = nodes.setdefault(name, (args_.get("op_name", "?"), shape, []))
            node[2].append(event["dur"] / 1e3)
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            passes.append(event["dur"] / 1e3)
    total = 0.0
    for name, (op, shape, times) in nodes.items():
        ms = statistics.median(times)
        total += ms
        if ms >= 0.02:
            print(f"{ms:8.2f} ms  {op:18} {str(shape):22} {name}")
    print(f"{total:8.2f} ms  in the nodes; the median pass took {statistics.median(passes):.2f} ms")


if __name__ == "__main__":
    main()
