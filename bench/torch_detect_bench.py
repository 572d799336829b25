"""facenet-pytorch's MTCNN on the photos `cargo xtask bench --detection` writes, for its ratios.

MTCNN(keep_all=True) with facenet-pytorch's defaults (minimum face 20 px, thresholds
0.6/0.7/0.7, pyramid factor 0.709), `detect` on a PIL image as its users call it. Prints one
JSON object on stdout. Needs torch, torchvision and facenet-pytorch; nothing in the tests
uses it.
"""

import argparse
import json
import os
import statistics
import time

import torch
from facenet_pytorch import MTCNN
from PIL import Image


def timed(run, warmup, runs, min_seconds, sync):
    for _ in range(warmup):
        run()
    sync()
    seconds = []
    while len(seconds) < runs or sum(seconds) < min_seconds:
        started = time.perf_counter()
        run()
        sync()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {"median_s": statistics.median(seconds), "min_s": seconds[0], "max_s": seconds[-1], "runs": len(seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mtcnn = MTCNN(keep_all=True, device=device)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device, "detection": {}}
    for path in args.photos:
        photo = Image.open(path).convert("RGB")
        with torch.no_grad():
            boxes, _ = mtcnn.detect(photo)
        name = os.path.splitext(os.path.basename(path))[0]
        out["detection"][name] = {
            "faces": 0 if boxes is None else len(boxes),
            "timing": timed(lambda: mtcnn.detect(photo), args.warmup, args.runs, args.min_seconds, sync),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
