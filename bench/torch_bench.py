"""PyTorch version of `cargo xtask bench`'s model measurements, for the ratios it prints.

The same networks (torchvision AlexNet `features` + adaptive 6x6 pool, or ResNet-18 up to
global average pooling; the CAF regressor and critic), the same optimisers (three Adams,
lr 1e-3, betas 0.5/0.9), the same steps on the same batch shape:

* baseline step: regression step only (L_AV, encoder + regressor update);
* CAF step: regression step, critic step on detached strong/weak features (the contrastive
  loss with adaptive k and margin), adversarial step (encoder update through the frozen critic);
* inference: evaluation-mode encoder + regressor at batch 1 and 64, no gradients.

With `--precision bf16`, every forward pass runs under `torch.autocast(dtype=torch.bfloat16)`
(PyTorch's mixed precision: bf16 convolutions and products, f32 weights and optimiser) and the
backward passes outside it, as PyTorch's documentation recommends.

Prints one JSON object on stdout. `cargo xtask bench --compare-torch` runs it; run it alone
with `python bench/torch_bench.py --help`. Needs torch and torchvision; nothing in the tests
uses it.
"""

import argparse
import contextlib
import json
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision


def encoder(arch):
    if arch == "alexnet":
        return nn.Sequential(torchvision.models.alexnet().features, nn.AdaptiveAvgPool2d(6), nn.Flatten()), 9216
    resnet = torchvision.models.resnet18()
    resnet.fc = nn.Identity()
    return resnet, 512


def regressor(n):
    return nn.Sequential(
        nn.Dropout(0.5), nn.Linear(n, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)
    )


def critic(n):
    return nn.Sequential(nn.Linear(n, 64), nn.Linear(64, 32), nn.Dropout(0.2), nn.ReLU(), nn.Linear(32, 16))


def va_loss(p, y):
    rmse = ((p - y) ** 2).mean(0).sqrt()
    mp, my = p.mean(0), y.mean(0)
    vp, vy = ((p - mp) ** 2).mean(0), ((y - my) ** 2).mean(0)
    cov = ((p - mp) * (y - my)).mean(0)
    pcc = cov / (vp * vy + 1e-12).sqrt()
    ccc = 2 * cov / (vp + vy + (mp - my) ** 2 + 1e-12)
    return rmse.sum() + 0.5 * (1 - pcc.mean()) + 0.5 * (1 - ccc.mean())


def otsu(values):
    v = np.sort(values)
    best, threshold = -1.0, v[0]
    for i in range(1, len(v)):
        a, b = v[:i], v[i:]
        between = len(a) * len(b) * (a.mean() - b.mean()) ** 2
        if between > best:
            best, threshold = between, v[i]
    return threshold


def group(labels):
    """Strong samples: VA radius at least the combined Otsu radius; pairs in order."""
    radius = np.hypot(labels[:, 0], labels[:, 1])
    threshold = np.hypot(otsu(np.abs(labels[:, 0])), otsu(np.abs(labels[:, 1])))
    strong, weak = np.flatnonzero(radius >= threshold), np.flatnonzero(radius < threshold)
    n = min(len(strong), len(weak))
    return strong[:n], weak[:n]


def adaptive_ks(s, w):
    points = torch.cat([s, w]).detach()
    labels = torch.cat([torch.ones(len(s)), torch.zeros(len(w))])
    order = torch.cdist(points, points).argsort(1)[:, 1:]
    ks = []
    for q in range(len(s)):
        near = labels[order[q]]
        fraction = near.cumsum(0) / torch.arange(1, len(near) + 1)
        ok = (torch.maximum(fraction, 1 - fraction) - 0.5) > 0.7 / torch.arange(1, len(near) + 1).sqrt()
        ks.append(int(ok.nonzero()[0]) + 1 if ok.any() else len(near))
    return torch.tensor(ks, dtype=torch.float32)


def mutual_information(x, y):
    p = torch.exp(-((y - x) ** 2) / 0.4)
    ref = 0.5 * torch.exp(-((y + 1) ** 2) / 0.4) + 0.5 * torch.exp(-((y - 1) ** 2) / 0.4)
    return torch.log(p / ref).mean(-1)


def critic_loss(s, w, ks, lam):
    w_rev, s_rev = w.flip(0), s.flip(0)
    margin = mutual_information(s, w_rev).clamp(0, 2.5) + 0.7 / ks.sqrt()
    d_ap = ((s - s_rev) ** 2).sum(1)
    d_an = torch.relu(margin - ((s - w_rev) ** 2).sum(1))
    c = 1 - (0.5 * (d_ap**2).mean() + 0.5 * (d_an**2).mean())
    return d_ap.mean() + d_an.mean() + lam * c - 1e-6 / 2 * c**2


class Models:
    def __init__(self, arch, device, autocast):
        self.autocast = autocast
        self.encoder, n = encoder(arch)
        self.pure_encoder = arch == "alexnet"
        self.regressor, self.critic = regressor(n), critic(n)
        for m in (self.encoder, self.regressor, self.critic):
            m.to(device).train()
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.9))
        self.opt_e, self.opt_r, self.opt_c = adam(self.encoder), adam(self.regressor), adam(self.critic)

    def baseline_step(self, x, y):
        self.opt_e.zero_grad()
        self.opt_r.zero_grad()
        with self.autocast():
            loss = va_loss(self.regressor(self.encoder(x)).float(), y)
        loss.backward()
        self.opt_e.step()
        self.opt_r.step()

    def caf_step(self, x, y, labels):
        self.baseline_step(x, y)
        strong, weak = group(labels)
        xs, xw = x[torch.from_numpy(strong).to(x.device)], x[torch.from_numpy(weak).to(x.device)]
        with self.autocast():
            with torch.no_grad():
                fs = self.encoder(xs)
            # As caf-rs does: AlexNet's encoder changes nothing when it runs, so its
            # pass over the weak samples serves the adversarial step too; ResNet-18's
            # batch norms count every pass, so there it runs again.
            fw_graph = self.encoder(xw) if self.pure_encoder else None
            with torch.no_grad():
                fw = fw_graph.detach() if fw_graph is not None else self.encoder(xw)
            s, w = self.critic(fs).float(), self.critic(fw).float()
        self.opt_c.zero_grad()
        critic_loss(s, w, adaptive_ks(s.cpu(), w.cpu()).to(s.device), 0.0).backward()
        self.opt_c.step()
        self.opt_e.zero_grad()
        for p in self.critic.parameters():
            p.requires_grad_(False)
        with self.autocast():
            adversarial = -self.critic(fw_graph if fw_graph is not None else self.encoder(xw)).float().mean()
        adversarial.backward()
        for p in self.critic.parameters():
            p.requires_grad_(True)
        self.opt_e.step()


MAX_RUNS = 10_000


def timed(fn, warmup, runs, min_seconds, sync):
    """`warmup` untimed runs, then timed ones until there are `runs` of them
    and they add up to `min_seconds` (as caf-rs's `Timing::measure`)."""
    for _ in range(warmup):
        fn()
    sync()
    times, total = [], 0.0
    while len(times) < MAX_RUNS and (len(times) < runs or total < min_seconds):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="alexnet,resnet18")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        # cuDNN times its algorithms per shape and keeps the fastest, as
        # caf-rs's cuDNN route does (PyTorch's default picks by heuristics).
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    angle, radius = rng.uniform(0, 2 * np.pi, args.batch), np.sqrt(rng.uniform(0, 0.95, args.batch))
    labels = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1).astype(np.float32)
    y = torch.from_numpy(labels).to(device)
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "device": args.device,
        "precision": args.precision,
        "arch": {},
    }

    def autocast():
        if args.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    for arch in args.arch.split(","):
        models = Models(arch, device, autocast)
        result = {
            "caf_step": timed(lambda: models.caf_step(x, y, labels), args.warmup, args.runs, args.min_seconds, sync),
            "baseline_step": timed(lambda: models.baseline_step(x, y), args.warmup, args.runs, args.min_seconds, sync),
        }
        models.encoder.eval()
        models.regressor.eval()
        for n in (1, 64):
            images = torch.randn(n, 3, args.size, args.size, device=device)

            def infer():
                with torch.no_grad(), autocast():
                    models.regressor(models.encoder(images))

            result[f"infer_batch{n}"] = timed(infer, args.warmup, args.runs, args.min_seconds, sync)
        out["arch"][arch] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main()
