#!/usr/bin/python3
"""Check the trainer's AdamW update against torch.optim.AdamW (float64).

Usage: check_adamw.py ADAMW_H5 [--rtol 1e-6]

ADAMW_H5: root attributes lr, beta1, beta2, eps, weight_decay, steps; groups before/<name>,
grad/<name> (the gradient used at every step) and after/<name>. Two parameter groups follow
DAPE-SPEC §1.3: LayerNorm tensors (layers.{i}.ln1.*, layers.{i}.ln2.*, ln_f.*) and names ending
in ".bias" are not decayed, except the T5 table "t5.bias", which is.
Per tensor, rel = max|after - torch| / max(max|torch|, 1e-30). Exit status 1 on failure.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_oracle as go  # noqa: E402


def main():
    import h5py
    ap = argparse.ArgumentParser(description="AdamW update against torch.optim.AdamW")
    ap.add_argument("adamw_h5")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()

    with h5py.File(args.adamw_h5, "r") as f:
        a = f.attrs
        lr, b1, b2 = float(a["lr"]), float(a["beta1"]), float(a["beta2"])
        eps, wd, steps = float(a["eps"]), float(a["weight_decay"]), int(a["steps"])
        before = {n: np.asarray(f["before"][n][()], dtype=np.float64) for n in f["before"]}
        grad = {n: np.asarray(f["grad"][n][()], dtype=np.float64) for n in f["grad"]}
        after = {n: np.asarray(f["after"][n][()], dtype=np.float64) for n in f["after"]}

    names = sorted(before)
    problems = []
    for label, d in (("grad", grad), ("after", after)):
        if set(d) != set(before):
            problems.append("%s/ names differ from before/: missing %s, extra %s" % (
                label, sorted(set(before) - set(d)), sorted(set(d) - set(before))))
    names = [n for n in names if n in grad and n in after]

    params = {n: torch.tensor(before[n], dtype=torch.float64, requires_grad=True) for n in names}
    decay = [params[n] for n in names if not go.no_decay(n)]
    keep = [params[n] for n in names if go.no_decay(n)]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": wd})
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    if groups:
        opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps, amsgrad=False)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            for n in names:
                params[n].grad = torch.tensor(grad[n], dtype=torch.float64)
            opt.step()

    rows = []
    for n in names:
        ref = params[n].detach().numpy()
        if ref.shape != after[n].shape:
            rows.append((float("inf"), n))
            continue
        diff = float(np.abs(after[n] - ref).max()) if ref.size else 0.0
        rows.append((diff / max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30), n))
    rows.sort(key=lambda r: (-r[0], r[1]))
    print("adamw: lr %g betas (%g, %g) eps %g wd %g steps %d; %d tensors (%d decayed)" % (
        lr, b1, b2, eps, wd, steps, len(names), len(decay)))
    print("%-44s %6s %12s" % ("tensor", "decay", "rel"))
    for rel, n in rows[:args.top]:
        print("%-44s %6s %12.3e" % (n, "no" if go.no_decay(n) else "yes", rel))
    bad = [n for rel, n in rows if not rel <= args.rtol]
    for p in problems:
        print(p)
    worst = max([r[0] for r in rows] + [0.0])
    print("adamw: max rel error %.3e over %d tensors" % (worst, len(rows)))
    if bad or problems:
        print("adamw: FAIL (rtol %.1e): %d over tolerance" % (args.rtol, len(bad)))
        return 1
    print("adamw: PASS (rtol %.1e)" % args.rtol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
