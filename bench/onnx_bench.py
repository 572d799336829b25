"""ONNX Runtime and OpenVINO versions of `cargo xtask bench`'s inference measurements.

The network caf-rs deploys (torchvision AlexNet `features` + adaptive 6x6 pool, or ResNet-18 up
to global average pooling; then the CAF regressor), in evaluation mode, exported to ONNX and run
at batch 1 and 64:

* ONNX Runtime, CPU execution provider, f32, all graph optimisations;
* OpenVINO on the CPU with its inference precision hint set to f32, and with `--precision bf16`
  set to bf16 (what OpenVINO picks by default on CPUs with AMX).

Prints one JSON object on stdout: per runtime and architecture, `infer_batch1` and
`infer_batch64` timings (median, min, max seconds and runs). `cargo xtask bench --compare-onnx`
runs it; run it alone with `python bench/onnx_bench.py --help`. Needs torch, torchvision, onnx,
onnxruntime and openvino; nothing in the tests uses it.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torchvision

MAX_RUNS = 10_000


def network(arch):
    if arch == "alexnet":
        encoder, n = nn.Sequential(torchvision.models.alexnet().features, nn.AdaptiveAvgPool2d(6), nn.Flatten()), 9216
    else:
        encoder = torchvision.models.resnet18()
        encoder.fc = nn.Identity()
        n = 512
    regressor = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(n, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    return nn.Sequential(encoder, regressor).eval()


def timed(fn, warmup, runs, min_seconds):
    """`warmup` untimed runs, then timed ones until there are `runs` of them
    and they add up to `min_seconds` (as caf-rs's `Timing::measure`)."""
    for _ in range(warmup):
        fn()
    times, total = [], 0.0
    while len(times) < MAX_RUNS and (len(times) < runs or total < min_seconds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def per_layer_parser(description, batch, runs):
    """The arguments the per-layer scripts (openvino_layers.py, onnxruntime_layers.py) share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", choices=["alexnet", "resnet18"], default="resnet18")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=runs)
    return parser


def export(arch, size, folder):
    path = os.path.join(folder, f"{arch}.onnx")
    torch.manual_seed(0)
    example = torch.randn(1, 3, size, size)
    torch.onnx.export(
        network(arch),
        (example,),
        path,
        input_names=["images"],
        output_names=["va"],
        dynamic_axes={"images": {0: "batch"}, "va": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def onnx_runtime_runner(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})


def openvino_runner(path, threads, precision):
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    actual = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return (lambda images: request.infer({0: images})), actual


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="alexnet,resnet18")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    args = parser.parse_args()
    # The TorchScript exporter is deprecated but needs no onnxscript.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import onnxruntime
    import openvino

    out = {
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "threads": args.threads,
        "precision": args.precision,
        "runtimes": {},
    }
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.arch.split(","):
            path = export(arch, args.size, folder)
            runners = {}
            if args.precision == "f32":
                runners["onnxruntime"] = onnx_runtime_runner(path, args.threads)
            runner, actual = openvino_runner(path, args.threads, args.precision)
            runners["openvino"] = runner
            out.setdefault("openvino_precision", {})[arch] = actual
            for name, run in runners.items():
                result = {}
                for n in (1, 64):
                    images = rng.standard_normal((n, 3, args.size, args.size), dtype=np.float32)
                    result[f"infer_batch{n}"] = timed(lambda: run(images), args.warmup, args.runs, args.min_seconds)
                out["runtimes"].setdefault(name, {})[arch] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main()
