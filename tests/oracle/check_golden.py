#!/usr/bin/python3
"""Self-validation of the oracle.

1. Golden files (causal, from an independent implementation): for every *.h5 in the given
   directory, groups T6 and T24 (B = 1, inputs tokens[0:T], targets tokens[1:T+1]); compare the
   loss and every gradient. Fails if any relative error exceeds --rtol (default 1e-8).
2. Self-tests by construction (the golden files do not cover bidirectional mode): bucket and
   slope tables from the spec, a scalar-loop re-implementation of the pre-softmax logits for
   every PE (both modes, with and without a randomized distance ladder), symmetry of Kerple/FIRE
   with equal left/right parameters, causal vs bidirectional token dependence, and
   finite-difference checks of the autograd gradients.

Usage: check_golden.py GOLDEN_DIR [--rtol 1e-8] [--no-selftest]
Exit status 1 on any failure.
"""

import argparse
import glob
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt_oracle as go  # noqa: E402


# --------------------------------------------------------------------------------------
# Golden files

def check_file(path, rtol):
    import h5py
    worst, worst_name, problems = 0.0, "", []
    with h5py.File(path, "r") as f:
        model = go.load_model(f)
        tokens = np.asarray(f["tokens"][()], dtype=np.int64)
        for gname in ("T6", "T24"):
            if gname not in f:
                problems.append("missing group " + gname)
                continue
            grp = f[gname]
            T = int(gname[1:])
            loss, grads = go.loss_and_grads(model, tokens[None, :T], tokens[None, 1:T + 1])
            ref_loss = float(grp.attrs["loss"])
            rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
            if rel > worst:
                worst, worst_name = rel, "%s/loss" % gname
            if rel > rtol:
                problems.append("%s loss %.17g vs %.17g (rel %.3g)" % (gname, loss, ref_loss, rel))
            ref = {n: np.asarray(grp["grad"][n][()], dtype=np.float64) for n in grp["grad"]}
            missing = sorted(set(ref) - set(grads))
            extra = sorted(set(grads) - set(ref))
            if missing:
                problems.append("%s: oracle lacks %s" % (gname, missing))
            if extra:
                problems.append("%s: golden lacks %s" % (gname, extra))
            for n, (rel, _zero) in go.compare_grads(ref, grads).items():
                if rel > worst:
                    worst, worst_name = rel, "%s/%s" % (gname, n)
                if not rel <= rtol:
                    problems.append("%s %s rel %.3g" % (gname, n, rel))
    return worst, worst_name, problems


# --------------------------------------------------------------------------------------
# Self-tests

def _cfg(pe, causal, variant="concat_residual", act="leaky_relu", H=3, d=12, L0=4,
         D=5, DF=5, layers=1, V=11):
    return {"model": {"n_layers": layers, "d_model": d, "n_heads": H, "vocab_size": V,
                      "pe": pe, "causal": causal,
                      "dape": {"variant": variant, "width": D, "activation": act},
                      "fire": {"width": DF, "L0": L0}}}


def _first_n_bucket(n, firsts):
    """Bucket from a list of (first distance, bucket) thresholds read off DAPE-SPEC §3.6."""
    b = None
    for first, bucket in firsts:
        if n >= first:
            b = bucket
    return b


CAUSAL_FIRSTS = [(n, n) for n in range(16)] + list(zip(
    [16, 19, 21, 24, 27, 31, 35, 40, 46, 52, 59, 67, 77, 87, 99, 113], range(16, 32)))
BIDIR_FIRSTS = [(n, n) for n in range(8)] + list(zip(
    [8, 12, 16, 23, 32, 46, 64, 91], range(8, 16)))


def test_tables():
    errs = []
    for n in range(0, 3000):
        if go.t5_bucket_causal(n) != _first_n_bucket(n, CAUSAL_FIRSTS):
            errs.append("causal bucket(%d) = %d" % (n, go.t5_bucket_causal(n)))
        if go.t5_bucket_bidir_abs(n) != _first_n_bucket(n, BIDIR_FIRSTS):
            errs.append("bidir bucket(%d) = %d" % (n, go.t5_bucket_bidir_abs(n)))
    idx = go.t5_bucket_matrix(20, causal=False).numpy()
    for i in range(20):
        for j in range(20):
            want = _first_n_bucket(abs(i - j), BIDIR_FIRSTS) + (16 if j > i else 0)
            if idx[i, j] != want:
                errs.append("bidir matrix (%d,%d)" % (i, j))
    spec = {4: [-2, -4, -6, -8], 6: [-2, -4, -6, -8, -1, -3], 8: [-1, -2, -3, -4, -5, -6, -7, -8],
            12: [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5],
            16: [-0.5 * k for k in range(1, 17)]}
    for H, logs in spec.items():
        got = [math.log2(m) for m in go.alibi_slopes(H)]
        if max(abs(a - b) for a, b in zip(got, logs)) > 1e-12 or len(got) != H:
            errs.append("alibi slopes H=%d: %s" % (H, got))
    return errs


def _np_params(model):
    return {n: p.detach().numpy() for n, p in model.params.items()}


def _act_np(name):
    if name == "leaky_relu":
        return lambda u: u if u > 0 else 0.01 * u
    if name == "relu":
        return lambda u: u if u > 0 else 0.0
    return lambda u: 0.5 * u * (1.0 + math.erf(u / math.sqrt(2.0)))


def naive_logits(model, layer, s, ladder=None):
    """Scalar-loop re-implementation of the pre-softmax logits for s [H, T, T] (one batch
    element), written from the formulas in the brief/DAPE-SPEC. Entries j > i are returned
    too (meaningful only in bidirectional mode). With a distance ladder (T ints), a distance
    d reads as ladder[d] (docs/positional-encodings.md, "Randomized positions")."""
    c = model.config
    P = _np_params(model)
    H, T = s.shape[0], s.shape[1]
    pre = "layers.%d." % layer
    kind = c.base_pe
    beta = np.zeros((H, T, T))
    slopes = go.alibi_slopes(H)
    at = (lambda d: d) if ladder is None else (lambda d: int(ladder[d]))
    for i in range(T):
        for j in range(T):
            right = j > i
            if c.causal and right:
                continue
            delta = at(abs(i - j)) * (1 if i >= j else -1)
            for h in range(H):
                if kind == "alibi":
                    m = slopes[h]
                    beta[h, i, j] = -m * abs(delta) + (0.5 * m if (not c.causal and j < i) else 0)
                elif kind == "kerple":
                    sfx = "_right" if right else ""
                    p = max(P[pre + "pe.kerple.p" + sfx][h], 0.01)
                    a = max(P[pre + "pe.kerple.a" + sfx][h], 0.01)
                    beta[h, i, j] = -p * math.log(1 + a * abs(delta))
                elif kind == "t5":
                    if c.causal:
                        b = _first_n_bucket(delta, CAUSAL_FIRSTS)
                    else:
                        b = _first_n_bucket(abs(delta), BIDIR_FIRSTS) + (16 if right else 0)
                    beta[h, i, j] = math.sqrt(c.head_dim) * P["t5.bias"][b, h]
            if kind == "fire":
                cc = float(P[pre + "pe.fire.c"])
                lam = float(P[pre + "pe.fire.lambda"])
                rowmax = at(i if c.causal else max(i, T - 1 - i))
                M = max(rowmax, abs(lam * c.fire_L0))
                N = math.log(1 + abs(cc * M)) + 1e-6
                r = math.log(1 + abs(cc * abs(delta))) / N
                sfx = "_right" if right else ""
                w1 = P[pre + "pe.fire.fc1%s.weight" % sfx][:, 0]
                b1 = P[pre + "pe.fire.fc1%s.bias" % sfx]
                w2 = P[pre + "pe.fire.fc2%s.weight" % sfx]
                b2 = P[pre + "pe.fire.fc2%s.bias" % sfx]
                act = _act_np("leaky_relu" if c.is_dape else "relu")
                hid = [act(w1[k] * r + b1[k]) for k in range(len(b1))]
                for h in range(H):
                    beta[h, i, j] = sum(w2[h, k] * hid[k] for k in range(len(hid))) + b2[h]
    out = np.zeros_like(s)
    for i in range(T):
        for j in range(T):
            if c.causal and j > i:
                continue
            sv, bv = s[:, i, j], beta[:, i, j]
            if not c.is_dape:
                out[:, i, j] = sv + bv
                continue
            if c.pe == "dape-nope":
                z, resid = sv, sv
            elif c.dape_variant == "concat_residual":
                z, resid = np.concatenate([sv, bv]), sv + bv
            elif c.dape_variant == "concat":
                z, resid = np.concatenate([sv, bv]), sv
            else:
                z, resid = sv + bv, sv + bv
            W1, c1 = P[pre + "dape.fc1.weight"], P[pre + "dape.fc1.bias"]
            W2, c2 = P[pre + "dape.fc2.weight"], P[pre + "dape.fc2.bias"]
            act = _act_np(c.dape_activation)
            u = [act(sum(W1[k, m] * z[m] for m in range(len(z))) + c1[k]) for k in range(len(c1))]
            for h in range(H):
                out[h, i, j] = resid[h] + sum(W2[h, k] * u[k] for k in range(len(u))) + c2[h]
    return out


ALL_PE = ["nope", "rope", "alibi", "kerple", "fire", "t5",
          "dape-nope", "dape-alibi", "dape-kerple", "dape-fire"]


def test_naive_logits():
    errs = []
    cases = []
    for causal in (True, False):
        for pe in ALL_PE:
            cases.append(_cfg(pe, causal))
        for variant in ("concat", "add_residual"):
            for act in ("relu", "gelu"):
                cases.append(_cfg("dape-kerple", causal, variant=variant, act=act))
                cases.append(_cfg("dape-fire", causal, variant=variant, act=act))
        # L0 = 2.5 with lambda near 1 keeps the threshold between rows; T = 9 spans it
        cases.append(_cfg("dape-fire", causal, L0=2.5))
    # Randomized distance ladders from {1..199}: T5 buckets past saturation, FIRE rows past L0.
    cases += [dict(cfg, ladder=True) for cfg in cases if cfg["model"]["pe"] not in ("nope", "rope",
                                                                                   "dape-nope")]
    for seed, cfg in enumerate(cases):
        model = go.random_model(cfg, seed=100 + seed)
        T = 9 if not cfg["model"]["pe"].endswith("t5") else 40
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(1, model.config.n_heads, T, T, generator=g, dtype=go.DTYPE) * 2.0
        ladder = None
        if cfg.get("ladder"):
            ladder = [0] + sorted(np.random.default_rng(seed).choice(np.arange(1, 200), T - 1,
                                                                     replace=False).tolist())
        with torch.no_grad():
            beta = go.position_bias(model, 0, T, ladder)
            got = go.attention_logits(model, 0, s, beta)[0].numpy()
        want = naive_logits(model, 0, s[0].numpy(), ladder)
        if cfg["model"]["causal"]:
            keep = np.tril(np.ones((T, T), dtype=bool))[None].repeat(got.shape[0], 0)
            got, want = got[keep], want[keep]
        err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
        if not err < 1e-12:
            errs.append("naive logits %s causal=%s variant=%s act=%s ladder=%s: rel %.3g" % (
                cfg["model"]["pe"], cfg["model"]["causal"], cfg["model"]["dape"]["variant"],
                cfg["model"]["dape"]["activation"], ladder, err))
    return errs


def test_symmetry():
    errs = []
    # Kerple: right parameters equal to left ones -> beta(i,j) = beta(j,i).
    m = go.random_model(_cfg("kerple", False), seed=7)
    with torch.no_grad():
        m.params["layers.0.pe.kerple.p_right"].copy_(m.params["layers.0.pe.kerple.p"])
        m.params["layers.0.pe.kerple.a_right"].copy_(m.params["layers.0.pe.kerple.a"])
        b = go.position_bias(m, 0, 13).numpy()
    if np.abs(b - b.transpose(0, 2, 1)).max() > 0:
        errs.append("kerple bidir with equal sides is not symmetric")
    if np.abs(b).max() == 0:
        errs.append("kerple bias is all zero")
    # ... and with different right parameters it is not symmetric.
    m2 = go.random_model(_cfg("kerple", False), seed=8)
    with torch.no_grad():
        b2 = go.position_bias(m2, 0, 13).numpy()
    if np.abs(b2 - b2.transpose(0, 2, 1)).max() < 1e-3:
        errs.append("kerple bidir with different sides looks symmetric")
    # FIRE: equal MLPs -> within a row, beta(i, i-d) = beta(i, i+d).
    m = go.random_model(_cfg("fire", False), seed=9)
    with torch.no_grad():
        for part in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
            a, bname = part.split(".")
            m.params["layers.0.pe.fire.%s_right.%s" % (a, bname)].copy_(
                m.params["layers.0.pe.fire.%s" % part])
        T = 13
        b = go.position_bias(m, 0, T).numpy()
    worst = 0.0
    for i in range(T):
        for dd in range(1, T):
            if i - dd >= 0 and i + dd < T:
                worst = max(worst, np.abs(b[:, i, i - dd] - b[:, i, i + dd]).max())
    if worst > 0:
        errs.append("fire bidir with equal sides is not mirror-symmetric per row (%.3g)" % worst)
    # FIRE normaliser: rows i and T-1-i share N, so with equal sides beta(i,.) mirrors.
    if np.abs(b - b[:, ::-1, ::-1]).max() > 1e-15:
        errs.append("fire bidir rows i and T-1-i are not mirror images")
    # ALiBi: beta(i,j) - beta(j,i) = 0.5 m for j < i.
    m = go.random_model(_cfg("alibi", False, H=6, d=12), seed=10)
    b = go.position_bias(m, 0, 7).numpy()
    slopes = np.array(go.alibi_slopes(6))
    for i in range(7):
        for j in range(i):
            if np.abs(b[:, i, j] - b[:, j, i] - 0.5 * slopes).max() > 1e-15:
                errs.append("alibi bidir left offset wrong at (%d,%d)" % (i, j))
    return errs


def test_rope_positions():
    """RoPE at given positions: 0..T-1 is the default, and q.k depends only on position
    differences, so shifting every position by a constant leaves the scores unchanged."""
    errs = []
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 6, 8, generator=g, dtype=go.DTYPE)
    k = torch.randn(2, 3, 6, 8, generator=g, dtype=go.DTYPE)
    if torch.abs(go.rope(q, list(range(6))) - go.rope(q)).max() != 0:
        errs.append("rope at positions 0..T-1 differs from the default")
    pos = [3, 17, 18, 40, 99, 500]
    scores = go.rope(q, pos) @ go.rope(k, pos).transpose(-1, -2)
    shifted = [p + 1000 for p in pos]
    scores2 = go.rope(q, shifted) @ go.rope(k, shifted).transpose(-1, -2)
    if not torch.abs(scores - scores2).max() < 1e-11 * torch.abs(scores).max():
        errs.append("rope scores change under a common shift of the positions")
    return errs


def test_dependence():
    """Causal: logits at positions < T-1 do not depend on the last token. Bidirectional: they do
    (for every PE), and the two modes agree on nothing in general."""
    errs = []
    for pe in ALL_PE:
        for causal in (True, False):
            cfg = _cfg(pe, causal, layers=2)
            model = go.random_model(cfg, seed=3, scale=0.5)
            T = 8
            g = np.random.default_rng(5)
            x = g.integers(0, 11, size=(1, T))
            y = x.copy()
            y[0, T - 1] = (x[0, T - 1] + 1) % 11
            with torch.no_grad():
                lx = go.forward(model, x).numpy()
                ly = go.forward(model, y).numpy()
            change = np.abs(lx[0, :T - 1] - ly[0, :T - 1]).max()
            if causal and change != 0.0:
                errs.append("%s causal: earlier positions depend on the last token" % pe)
            if not causal and change < 1e-6:
                errs.append("%s bidirectional: earlier positions ignore the last token" % pe)
    return errs


def test_finite_differences():
    """Directional central differences against autograd, per tensor, at random points away from
    clamps and ties, in both modes."""
    errs = []
    for causal in (True, False):
        for pe in ALL_PE:
            cfg = _cfg(pe, causal, L0=2.5, act="gelu" if pe == "dape-alibi" else "leaky_relu")
            model = go.random_model(cfg, seed=11, scale=0.5)
            T = 7
            rng = np.random.default_rng(1)
            x = rng.integers(0, 11, size=(2, T))
            t = rng.integers(0, 11, size=(2, T))
            _, grads = go.loss_and_grads(model, x, t)
            eps = 1e-6
            for n, p in model.params.items():
                v = torch.from_numpy(rng.standard_normal(tuple(p.shape)))
                with torch.no_grad():
                    p.add_(eps * v)
                    lp = float(go.loss_value(model, x, t))
                    p.sub_(2 * eps * v)
                    lm = float(go.loss_value(model, x, t))
                    p.add_(eps * v)
                fd = (lp - lm) / (2 * eps)
                an = float((torch.from_numpy(grads[n]) * v).sum())
                # fd round-off is about |loss| * 1e-16 / eps ~ 1e-9
                if abs(fd - an) > 1e-6 * max(abs(an), abs(fd)) + 1e-8:
                    errs.append("fd %s causal=%s %s: fd %.10g autograd %.10g" % (
                        pe, causal, n, fd, an))
            if not causal:
                for n in grads:
                    if "_right" in n and not np.abs(grads[n]).max() > 1e-8:
                        errs.append("%s: right-side parameter %s gets no gradient" % (pe, n))
    return errs


def test_any_length():
    errs = []
    for pe in ("rope", "dape-fire", "t5", "dape-kerple"):
        for causal in (True, False):
            model = go.random_model(_cfg(pe, causal), seed=2)
            x = np.arange(300, dtype=np.int64)[None] % 11
            loss, grads = go.loss_and_grads(model, x, (x + 1) % 11)
            if not np.isfinite(loss) or not all(np.isfinite(g).all() for g in grads.values()):
                errs.append("%s causal=%s: non-finite at T=300" % (pe, causal))
    return errs


def run_selftests():
    failures = 0
    for name, fn in [("tables (T5 buckets, ALiBi slopes)", test_tables),
                     ("scalar-loop logits, all PEs, both modes", test_naive_logits),
                     ("bidirectional symmetry constructions", test_symmetry),
                     ("rope at given positions", test_rope_positions),
                     ("causal vs bidirectional token dependence", test_dependence),
                     ("finite differences vs autograd, both modes", test_finite_differences),
                     ("long sequence T=300", test_any_length)]:
        errs = fn()
        print("selftest %-45s %s" % (name, "ok" if not errs else "FAIL"))
        for e in errs[:20]:
            print("    " + e)
        failures += bool(errs)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("golden_dir")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--no-selftest", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(glob.glob(os.path.join(args.golden_dir, "*.h5")))
    failed = 0
    if not files:
        print("no golden files in %s" % args.golden_dir)
        failed += 1
    for path in files:
        try:
            worst, where, problems = check_file(path, args.rtol)
        except Exception as e:  # report and go on with the other files
            worst, where, problems = float("inf"), "", ["error: %r" % (e,)]
        status = "ok" if not problems else "FAIL"
        print("%-32s max rel error %.3e  (%s)  %s" % (os.path.basename(path), worst, where, status))
        for p in problems[:20]:
            print("    " + p)
        failed += bool(problems)
    if not args.no_selftest:
        failed += run_selftests()
    print("check_golden: %s" % ("PASS" if not failed else "FAIL (%d)" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
