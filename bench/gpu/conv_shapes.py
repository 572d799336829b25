"""PyTorch's time for each convolution shape caf-rs timed, set beside ours.

Reads the JSON lines of `conv_speed --json` (one per layer shape: sizes,
batch, precision and our forward / input-gradient / weight-gradient
milliseconds), times the same passes in PyTorch measured the same way
(inside the graph a training step builds: the forward pass; `(y * dy).sum()`
backward with the input tracked, then untracked; the same loss over a
stand-in output, taken off the weight gradient), and writes one JSON object
with both and their ratios (PyTorch's time over ours: above 1, caf-rs is
faster). cuDNN's autotuner is on (`cudnn.benchmark`), as our route also
searches for the fastest algorithm; TF32 follows PyTorch's defaults unless
NVIDIA_TF32_OVERRIDE=0. Never run by tests or CI.

    python bench/gpu/conv_shapes.py ours.jsonl --device cuda --out convs.json
"""

import argparse
import json
import time

import torch


def best_ms(run, device):
    for _ in range(2):
        run()
    sync(device)
    best = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        run()
        sync(device)
        best = min(best, (time.perf_counter() - started) * 1e3)
    return best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layer(row, device):
    batch, c, side = row["batch"], row["channels"], row["side"]
    k, kernel, stride, padding = row["out_channels"], row["kernel"], row["stride"], row["padding"]
    autocast = row["precision"] == "bf16"

    def conv(x, w):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)

    x = torch.randn(batch, c, side, side, device=device, requires_grad=True)
    w = (torch.randn(k, c, kernel, kernel, device=device) * 0.1).requires_grad_()
    y = conv(x, w)
    dy = torch.randn(y.shape, device=device)
    image = x.detach()
    stand_in = y.detach().float().requires_grad_()

    def forward():
        with torch.no_grad():
            conv(x, w)

    def both():
        (conv(x, w) * dy).sum().backward()

    def weight_only():
        (conv(image, w) * dy).sum().backward()

    def loss_only():
        (stand_in * dy).sum().backward()

    # Gradients accumulate into .grad between runs; clear them so that no
    # run pays for an addition the others do not.
    def fresh(run):
        def wrapped():
            x.grad = w.grad = stand_in.grad = None
            run()

        return wrapped

    forward_ms = best_ms(forward, device)
    both_ms = best_ms(fresh(both), device)
    weight_only_ms = best_ms(fresh(weight_only), device)
    loss_ms = best_ms(fresh(loss_only), device)
    return {
        "forward_ms": forward_ms,
        "input_grad_ms": both_ms - weight_only_ms,
        "weight_grad_ms": weight_only_ms - forward_ms - loss_ms,
    }


PASSES = ("forward_ms", "input_grad_ms", "weight_grad_ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", help="JSON lines written by conv_speed --json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True, help="where to write the side-by-side JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    with open(args.ours) as f:
        ours = [json.loads(line) for line in f if line.strip().startswith("{")]
    if not ours:
        raise SystemExit(f"{args.ours}: no conv_speed --json rows")
    rows = []
    print(f"{'layer':<22} {'batch':>5} " + " ".join(f"{p[:-3]:>24}" for p in PASSES))
    print(f"{'':<22} {'':>5} " + " ".join(f"{'ours / torch ms (ratio)':>24}" for _ in PASSES))
    for row in ours:
        torch_ms = time_layer(row, device)
        # A difference of two timings can come out at or below zero on a
        # noisy machine: no ratio then.
        ratios = {p: torch_ms[p] / row[p] if row[p] > 0 and torch_ms[p] > 0 else None for p in PASSES}
        rows.append({**row, "torch": torch_ms, "ratio": ratios})
        cells = []
        for p in PASSES:
            ratio = "  -  " if ratios[p] is None else f"{ratios[p]:5.2f}"
            cells.append(f"{row[p]:8.3f} / {torch_ms[p]:8.3f} ({ratio})")
        print(f"{row['layer']:<22} {row['batch']:>5} " + " ".join(f"{c:>24}" for c in cells))
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cudnn_benchmark": True,
        "tf32_allowed": torch.backends.cudnn.allow_tf32,
        "layers": rows,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
