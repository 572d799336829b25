"""Independent computation of the values that src/tests.rs asserts (numpy + torch, float64).

Written from the formulas of docs/method.md, not from our Rust code; its printed output is
committed below and pasted into the tests. Run: python reference_values.py
"""

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

PRED = np.array([[0.1, 0.5], [0.4, -0.2], [-0.3, 0.3], [0.8, 0.1], [-0.5, -0.6]])
LABEL = np.array([[0.2, 0.4], [0.5, -0.1], [-0.4, 0.0], [0.6, 0.3], [-0.2, -0.7]])


def va_loss(p, y):
    rmse = np.sqrt(((p - y) ** 2).mean(0))
    mp, my = p.mean(0), y.mean(0)
    vp, vy = ((p - mp) ** 2).mean(0), ((y - my) ** 2).mean(0)
    cov = ((p - mp) * (y - my)).mean(0)
    pcc = cov / np.sqrt(vp * vy)
    ccc = 2 * cov / (vp + vy + (mp - my) ** 2)
    return rmse.sum() + 0.5 * (1 - pcc.mean()) + 0.5 * (1 - ccc.mean()), rmse, pcc, ccc


def mutual_info(x, y):  # the reference code's estimate, direct form
    var = 0.2
    p = torch.exp(-((y - x) ** 2) / (2 * var))
    minus = torch.exp(-((y + 1) ** 2) / (2 * var))
    plus = torch.exp(-((y - 1) ** 2) / (2 * var))
    return torch.mean(torch.log(p / (0.5 * minus + 0.5 * plus)), dim=-1)


def adaptive_k(points, labels, q):
    d = ((points - points[q]) ** 2).sum(1)
    order = [j for j in np.argsort(d, kind="stable") if j != q]
    for k in range(1, len(order) + 1):
        lab = labels[order[:k]]
        frac = max(lab.mean(), 1 - lab.mean())
        if frac - 0.5 > 0.7 / np.sqrt(k):
            return k
    return len(order)


S = torch.tensor([[0.9, 0.2], [0.7, 0.4], [1.1, -0.1]])
W = torch.tensor([[0.1, 0.0], [-0.2, 0.3], [0.0, -0.4]])


def critic_loss(s, w, ks, lam, rho=1e-6):
    n = s.shape[0]
    d_ap, d_an, margins = [], [], []
    for i in range(n):
        mi = torch.clamp(mutual_info(s[i], w[n - 1 - i]), 0.0, 2.5)
        m = mi + 0.7 / np.sqrt(ks[i])
        d_ap.append(((s[i] - s[n - 1 - i]) ** 2).sum())
        d_an.append(torch.relu(m - ((s[i] - w[n - 1 - i]) ** 2).sum()))
        margins.append(m)
    d_ap, d_an = torch.stack(d_ap), torch.stack(d_an)
    c = 1 - (0.5 * (d_ap**2).mean() + 0.5 * (d_an**2).mean())
    return d_ap.mean() + d_an.mean() + lam * c - rho / 2 * c**2, c, d_ap, d_an, torch.stack(margins)


def main():
    np.set_printoptions(precision=12)
    total, rmse, pcc, ccc = va_loss(PRED, LABEL)
    print("va_loss total", repr(total), "rmse", rmse, "pcc", pcc, "ccc", ccc)
    print("mi", mutual_info(torch.tensor([[0.3, -0.2, 1.0], [2.0, 0.5, -1.5]]), torch.tensor([[0.1, 0.4, 0.9], [1.5, -0.5, -2.0]])).numpy())
    pts = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.1], [1.0, 1.0], [1.1, 0.9], [0.9, 1.2], [0.15, 0.05], [1.05, 1.1]])
    lab = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    print("adaptive k", [adaptive_k(pts, lab, q) for q in range(len(pts))])
    mixed = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    print("adaptive k alternating", [adaptive_k(mixed, np.array([1, 0, 1, 0, 1, 0]), q) for q in range(6)])
    line = np.arange(7.0)[:, None]
    print("adaptive k six", adaptive_k(line, np.array([0, 1, 0, 1, 1, 1, 1]), 0))
    loss, c, d_ap, d_an, m = critic_loss(S, W, [2, 1, 5], 0.3)
    print("critic loss", loss.item(), "constraint", c.item(), "d_ap", d_ap.numpy(), "d_an", d_an.numpy(), "margin", m.numpy())
    y = np.array([0.2, -0.5, 0.0, 0.7, -0.1, 0.4, 0.9])
    p = np.array([0.1, -0.3, 0.2, 0.5, 0.0, 0.3, 0.6])
    print(
        "metrics rmse", np.sqrt(((p - y) ** 2).mean()),
        "sagr", (np.sign(p) == np.sign(y)).mean(),
        "pcc", np.corrcoef(p, y)[0, 1],
        "ccc", 2 * np.cov(p, y, bias=True)[0, 1] / (p.var() + y.var() + (p.mean() - y.mean()) ** 2),
    )


if __name__ == "__main__":
    main()

# Output (torch 2.15, numpy 2):
# va_loss total np.float64(0.44762958409142567) rmse [0.1788854382 0.1788854382] pcc [0.934573931409 0.898395721925] ccc [0.913978494624 0.893617021277]
# mi [1.224302174685 0.690908628409]
# adaptive k [2, 2, 2, 2, 2, 2, 2, 2]
# adaptive k alternating [5, 2, 2, 2, 2, 5]
# adaptive k six 6
# critic loss 0.7900213732010976 constraint 0.8268704250588026 d_ap [0.13 0.   0.13] d_an [0.             0.872889499252 0.492992263371] margin [1.069973373152 1.692889499252 1.502992263371]
# metrics rmse 0.18516401995451032 sagr 0.7142857142857143 pcc 0.973259269957074 ccc 0.8775510204081631
