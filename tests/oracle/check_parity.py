#!/usr/bin/python3
"""Compare the C++ trainer's loss and gradients with the float64 oracle.

Usage: check_parity.py [--rtol 1e-4] MODEL_H5 OURS_H5 [MODEL_H5 OURS_H5 ...]

MODEL_H5: weight file (datasets at the root, float32 or float64, plus attribute `config`).
OURS_H5:  datasets `inputs`, `targets` (int64 [B, T]; a negative target is an ignored position),
          root attribute `loss` (float64), group `grad/<name>` (float64) for every parameter,
          and, for randomized positions, group `positions/<layer>` (int64 [T]): each layer's
          distance ladder or RoPE positions as the C++ forward drew them.

Per tensor, rel = max|ours - oracle| / max(max|oracle|, 1e-30). A tensor whose exact gradient
is zero (oracle at float64 round-off, below 1e-12 of the largest gradient in the model, e.g. the
DAPE output bias, which shifts a whole softmax row) is measured against that largest gradient
instead; it is marked "(zero)". Exit status 1 if any rel > rtol, or a gradient name is missing
or extra.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_oracle as go  # noqa: E402


def describe_backbone(c):
    """The backbone options that differ from DAPE-SPEC §1, e.g. "  post relu scaled-embedding"."""
    parts = []
    if c.norm != "pre":
        parts.append(c.norm + "-LN")
    if c.mlp_activation != "gelu":
        parts.append(c.mlp_activation)
    if c.scale_embedding:
        parts.append("scaled-embedding")
    if not c.attention_bias:
        parts.append("no-attention-bias")
    if c.head_bias:
        parts.append("head-bias")
    if c.output_size:
        parts.append("classes=%d" % c.output_size)
    if c.randomized_positions:
        parts.append("randomized=%d" % c.randomized_positions)
    return "  " + " ".join(parts) if parts else ""


def check_pair(model_h5, ours_h5, rtol, top):
    """Prints the comparison of one (weights, ours) pair; returns (passed, worst rel error)."""
    import h5py
    try:
        model = go.load_model(model_h5)
    except (KeyError, ValueError) as e:
        print("parity: cannot load %s: %s" % (model_h5, e))
        return False, float("inf")
    with h5py.File(model_h5, "r") as f:
        extra_w = sorted(k for k in f.keys()
                         if isinstance(f[k], h5py.Dataset) and k not in model.params)
    if extra_w:
        print("note: weight file datasets not used by the model: %s" % ", ".join(extra_w))

    with h5py.File(ours_h5, "r") as f:
        inputs = np.asarray(f["inputs"][()], dtype=np.int64)
        targets = np.asarray(f["targets"][()], dtype=np.int64)
        our_loss = float(f.attrs["loss"])
        ours = {n: np.asarray(f["grad"][n][()], dtype=np.float64) for n in f["grad"]}
        positions = None
        if "positions" in f:
            positions = [np.asarray(f["positions"][str(l)][()], dtype=np.int64)
                         for l in range(model.config.n_layers)]
    if inputs.ndim == 1:
        inputs, targets = inputs[None], targets[None]

    loss, grads = go.loss_and_grads(model, inputs, targets, positions)
    missing = sorted(set(grads) - set(ours))
    extra = sorted(set(ours) - set(grads))

    rows = []
    loss_rel = abs(our_loss - loss) / max(abs(loss), 1e-30)
    for n, (rel, zero) in go.compare_grads(grads, ours).items():
        rows.append((rel, n, zero))
    rows.sort(key=lambda r: (-r[0] if np.isfinite(r[0]) else -np.inf, r[1]))

    B, T = inputs.shape
    pe = model.config.pe
    if pe.startswith("dape-") and pe != "dape-nope":
        pe += "/" + model.config.dape_variant
    print("config: %s  causal=%s  B=%d T=%d%s" % (pe, model.config.causal, B, T,
                                                 describe_backbone(model.config)))
    print("%-44s %12s" % ("tensor", "rel"))
    print("%-44s %12.3e   (ours %.10g, oracle %.10g)" % ("loss", loss_rel, our_loss, loss))
    for rel, n, zero in rows[:top]:
        print("%-44s %12.3e%s" % (n, rel, "   (zero)" if zero else ""))
    bad = [n for rel, n, _ in rows if not rel <= rtol]
    if not loss_rel <= rtol:
        bad.append("loss")
    for n in missing:
        print("MISSING in ours: %s" % n)
    for n in extra:
        print("EXTRA in ours (not a parameter of this config): %s" % n)
    worst = max([loss_rel] + [r[0] for r in rows])
    print("parity: max rel error %.3e over %d tensors" % (worst, len(rows)))
    if bad or missing or extra:
        print("parity: FAIL (rtol %.1e): %d over tolerance%s%s" % (
            rtol, len(bad), ", %d missing" % len(missing) if missing else "",
            ", %d extra" % len(extra) if extra else ""))
        return False, worst
    print("parity: PASS (rtol %.1e)" % rtol)
    return True, worst


def main():
    ap = argparse.ArgumentParser(description="loss/gradient parity against the oracle")
    ap.add_argument("files", nargs="+", help="pairs MODEL_H5 OURS_H5")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--top", type=int, default=10, help="rows of the table (default 10)")
    args = ap.parse_args()
    if len(args.files) % 2:
        ap.error("expected pairs of files: MODEL_H5 OURS_H5 ...")
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    failed = 0
    for model_h5, ours_h5 in zip(args.files[0::2], args.files[1::2]):
        ok, _ = check_pair(model_h5, ours_h5, args.rtol, args.top)
        failed += not ok
    pairs = len(args.files) // 2
    print("parity summary: %d of %d pairs passed" % (pairs - failed, pairs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
