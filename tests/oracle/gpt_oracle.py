"""Float64 PyTorch oracle for the DAPE GPT model (DAPE-SPEC.md sections 1, 3 and 4).

The model is written straight from the spec with plain tensor operations, and every
gradient comes from torch autograd. It shares nothing with the C++ forward/backward code,
which is what makes it useful as a check on it.

Public entry points:
    load_model(h5_path_or_group) -> OracleModel
    loss_and_grads(model, inputs, targets, positions=None) -> (loss: float, {name: np.ndarray float64})
    forward(model, inputs, positions=None) -> logits tensor [B, T, O]
    param_shapes(config) -> OrderedDict name -> shape (the parameters a config implies)
    random_model(config, seed) -> OracleModel with random weights (for self-tests)

Config: {"model": {"n_layers", "d_model", "n_heads", "vocab_size", "pe", "causal",
                   "dape": {"variant", "width", "activation"}, "fire": {"width", "L0"},
                   "norm", "mlp_activation", "scale_embedding", "attention_bias", "head_bias",
                   "output_size", "dropout", "randomized_positions", "init"}}
The backbone keys (from "norm" on) default to DAPE-SPEC §1 when absent: pre-LN with ln_f, GELU,
no embedding scale, attention biases, a bias-free head of vocab_size rows. norm = "post" is the
CHE encoder (CHE.md §3.5): x <- LN1(x + attn(x)); x <- LN2(x + mlp(x)), no ln_f.

Not modelled: dropout (the oracle is the dropout-free forward; compare it with a C++ forward at
model.dropout = 0) and the drawing of randomized positions (docs/positional-encodings.md). With
randomized_positions > 0, `positions` must give every layer's draw: one int sequence of T entries
per layer, the distance ladder s_0 = 0 < s_1 < ... for a bias PE, the sorted absolute positions for
RoPE. positions may also be given without randomized_positions (an identity ladder, or 0..T-1,
reproduces the deterministic forms). Negative targets are ignored positions: no loss, and the mean
runs over the other positions.
"""

import json
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

DTYPE = torch.float64

NORMS = ("pre", "post")
PE_KINDS = ("nope", "rope", "alibi", "kerple", "fire", "t5",
            "dape-nope", "dape-alibi", "dape-kerple", "dape-fire")
DAPE_VARIANTS = ("concat_residual", "concat", "add_residual")
DAPE_ACTIVATIONS = ("leaky_relu", "relu", "gelu")

LN_EPS = 1e-5
KERPLE_MIN = 0.01
FIRE_EPS = 1e-6
LEAKY_SLOPE = 0.01
T5_BUCKETS = 32


# --------------------------------------------------------------------------------------
# Config

class Config:
    def __init__(self, cfg):
        if isinstance(cfg, (str, bytes)):
            cfg = json.loads(cfg)
        m = cfg["model"] if "model" in cfg else cfg
        self.raw = cfg
        self.n_layers = int(m["n_layers"])
        self.d_model = int(m["d_model"])
        self.n_heads = int(m["n_heads"])
        self.vocab_size = int(m["vocab_size"])
        self.pe = str(m.get("pe", "nope"))
        self.causal = bool(m.get("causal", True))
        dape = m.get("dape") or {}
        fire = m.get("fire") or {}
        self.dape_variant = str(dape.get("variant", "concat_residual"))
        self.dape_width = int(dape.get("width", 32))
        self.dape_activation = str(dape.get("activation", "leaky_relu"))
        self.fire_width = int(fire.get("width", 32))
        self.fire_L0 = float(fire.get("L0", 64))
        self.norm = str(m.get("norm", "pre"))
        self.mlp_activation = str(m.get("mlp_activation", "gelu"))
        self.scale_embedding = bool(m.get("scale_embedding", False))
        self.attention_bias = bool(m.get("attention_bias", True))
        self.head_bias = bool(m.get("head_bias", False))
        self.output_size = int(m.get("output_size", 0))
        self.randomized_positions = int(m.get("randomized_positions", 0))
        if self.norm not in NORMS:
            raise ValueError("unknown norm %r" % self.norm)
        if self.mlp_activation not in DAPE_ACTIVATIONS:
            raise ValueError("unknown mlp_activation %r" % self.mlp_activation)
        if self.output_size < 0 or self.randomized_positions < 0:
            raise ValueError("output_size and randomized_positions must be >= 0")
        if self.pe not in PE_KINDS:
            raise ValueError("unknown pe %r" % self.pe)
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        if self.is_dape:
            if self.dape_variant not in DAPE_VARIANTS:
                raise ValueError("unknown dape.variant %r" % self.dape_variant)
            if self.dape_activation not in DAPE_ACTIVATIONS:
                raise ValueError("unknown dape.activation %r" % self.dape_activation)
        if self.pe == "rope" and self.head_dim % 2:
            raise ValueError("rope needs an even head dim")

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    @property
    def is_dape(self):
        return self.pe.startswith("dape-")

    @property
    def outputs(self):
        """Rows of the head: output_size classes, or the vocabulary when it is 0."""
        return self.output_size or self.vocab_size

    @property
    def reads_positions(self):
        """Whether the attention reads positions at all (so a randomized draw exists)."""
        return self.base_pe != "nope"

    @property
    def base_pe(self):
        """The additive bias a PE uses: none, alibi, kerple, fire or t5 (rope handled apart)."""
        return self.pe[5:] if self.is_dape else self.pe

    @property
    def dape_in(self):
        """Input width of the DAPE MLP."""
        if self.pe == "dape-nope" or self.dape_variant == "add_residual":
            return self.n_heads
        return 2 * self.n_heads


def param_shapes(config):
    """Every parameter name the config implies, with its shape, in a fixed order."""
    c = config if isinstance(config, Config) else Config(config)
    d, H, V = c.d_model, c.n_heads, c.vocab_size
    out = OrderedDict()
    out["embed.weight"] = (V, d)
    for l in range(c.n_layers):
        p = "layers.%d." % l
        out[p + "ln1.weight"] = (d,)
        out[p + "ln1.bias"] = (d,)
        out[p + "attn.qkv.weight"] = (3 * d, d)
        out[p + "attn.proj.weight"] = (d, d)
        if c.attention_bias:
            out[p + "attn.qkv.bias"] = (3 * d,)
            out[p + "attn.proj.bias"] = (d,)
        out[p + "ln2.weight"] = (d,)
        out[p + "ln2.bias"] = (d,)
        out[p + "mlp.fc.weight"] = (4 * d, d)
        out[p + "mlp.fc.bias"] = (4 * d,)
        out[p + "mlp.proj.weight"] = (d, 4 * d)
        out[p + "mlp.proj.bias"] = (d,)
        if c.base_pe == "kerple":
            out[p + "pe.kerple.p"] = (H,)
            out[p + "pe.kerple.a"] = (H,)
            if not c.causal:
                out[p + "pe.kerple.p_right"] = (H,)
                out[p + "pe.kerple.a_right"] = (H,)
        if c.base_pe == "fire":
            DF = c.fire_width
            out[p + "pe.fire.c"] = ()
            out[p + "pe.fire.lambda"] = ()
            sides = ("",) if c.causal else ("", "_right")
            for s in sides:
                out[p + "pe.fire.fc1%s.weight" % s] = (DF, 1)
                out[p + "pe.fire.fc1%s.bias" % s] = (DF,)
                out[p + "pe.fire.fc2%s.weight" % s] = (H, DF)
                out[p + "pe.fire.fc2%s.bias" % s] = (H,)
        if c.is_dape:
            D = c.dape_width
            out[p + "dape.fc1.weight"] = (D, c.dape_in)
            out[p + "dape.fc1.bias"] = (D,)
            out[p + "dape.fc2.weight"] = (H, D)
            out[p + "dape.fc2.bias"] = (H,)
    if c.norm == "pre":
        out["ln_f.weight"] = (d,)
        out["ln_f.bias"] = (d,)
    out["head.weight"] = (c.outputs, d)
    if c.head_bias:
        out["head.bias"] = (c.outputs,)
    if c.pe == "t5":
        out["t5.bias"] = (T5_BUCKETS, H)
    return out


class OracleModel:
    def __init__(self, config, params):
        self.config = config if isinstance(config, Config) else Config(config)
        self.params = OrderedDict()
        shapes = param_shapes(self.config)
        for name, shape in shapes.items():
            if name not in params:
                raise KeyError("missing parameter %s" % name)
            t = torch.as_tensor(np.asarray(params[name], dtype=np.float64)).to(DTYPE).clone()
            if tuple(t.shape) != tuple(shape):
                raise ValueError("%s: shape %s, expected %s" % (name, tuple(t.shape), shape))
            self.params[name] = t.requires_grad_(True)
        self.ignored = sorted(set(params) - set(shapes))

    def names(self):
        return list(self.params.keys())


def _read_group(g):
    import h5py
    if "config" in g.attrs:
        root = g
    elif "model" in g and "config" in g["model"].attrs:
        root = g["model"]
    else:
        raise KeyError("no 'config' attribute at the root or under model/")
    cfg = root.attrs["config"]
    if isinstance(cfg, bytes):
        cfg = cfg.decode()
    config = Config(str(cfg))
    params = {}
    for name in param_shapes(config):
        if name not in root or not isinstance(root[name], h5py.Dataset):
            raise KeyError("weight file lacks dataset %s" % name)
        params[name] = np.asarray(root[name][()], dtype=np.float64)
    return OracleModel(config, params)


def load_model(src):
    """Read weights and config from an HDF5 file path, an open h5py File, or a group.

    Weights sit at the root of a weight file, or under group model/ in a golden file.
    """
    import h5py
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        with h5py.File(src, "r") as f:
            return _read_group(f)
    return _read_group(src)


def random_model(config, seed=0, scale=None):
    """Random weights, roughly as DAPE-SPEC §1.3, for self-tests. LN weights are perturbed
    from 1 so that their gradients are not trivial."""
    c = config if isinstance(config, Config) else Config(config)
    g = torch.Generator().manual_seed(seed)
    d = c.d_model

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=DTYPE) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=DTYPE)

    sig = scale if scale is not None else math.sqrt(2.0 / (5 * d))
    params = {}
    for name, shape in param_shapes(c).items():
        leaf = name.split(".")[-1]
        if ".ln" in name or name.startswith("ln_f"):
            params[name] = (1.0 + normal(shape, 0.1)) if leaf == "weight" else normal(shape, 0.1)
        elif ".kerple.p" in name:
            params[name] = uniform(shape, 0.05, 2.0)
        elif ".kerple.a" in name:
            params[name] = uniform(shape, 0.05, 1.0)
        elif name.endswith("fire.c"):
            params[name] = torch.tensor(0.1, dtype=DTYPE) + normal((), 0.02)
        elif name.endswith("fire.lambda"):
            params[name] = torch.tensor(1.0, dtype=DTYPE) + normal((), 0.05)
        elif ".fire.fc" in name or ".dape.fc" in name:
            fan_in = shape[1] if leaf == "weight" else None
            if fan_in is None:
                fan_in = param_shapes(c)[name[:-len("bias")] + "weight"][1]
            b = 1.0 / math.sqrt(fan_in)
            params[name] = uniform(shape, -b, b)
        elif name == "t5.bias":
            params[name] = normal(shape, math.sqrt(2.0 / (32 + c.n_heads)))
        else:
            params[name] = normal(shape, sig)
    return OracleModel(c, params)


# --------------------------------------------------------------------------------------
# Positional encodings

def alibi_slopes(H):
    """Standard ALiBi slopes (DAPE-SPEC §3.3), head order as listed there."""
    def geo(n):
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]
    if H & (H - 1) == 0:
        return geo(H)
    c = 1 << (H.bit_length() - 1)
    extra = [2.0 ** (-4.0 * (2 * k - 1) / c) for k in range(1, H - c + 1)]
    return geo(c) + extra


def _floor_log_ratio(n, base_n, num, den):
    """floor(num/den * log2(n / base_n)) for integer n >= base_n, exactly (integers only).

    Largest k >= 0 with 2^(k*den/num) <= n/base_n, i.e. 2^(k*den) * base_n^num <= n^num.
    """
    lhs_base = base_n ** num
    nn = n ** num
    k = 0
    while (lhs_base << ((k + 1) * den)) <= nn:
        k += 1
    return k


def t5_bucket_causal(n):
    """bucket(n) for n >= 0: n if n < 16, else min(31, 16 + floor(16 ln(n/16) / ln 8))."""
    n = int(n)
    if n < 16:
        return n
    # 16 ln(n/16)/ln(8) = (16/3) log2(n/16)
    return min(31, 16 + _floor_log_ratio(n, 16, 16, 3))


def t5_bucket_bidir_abs(n):
    """Bucket of |n| within one direction: |n| if < 8, else min(15, 8 + floor(8 ln(|n|/8)/ln 16))."""
    n = abs(int(n))
    if n < 8:
        return n
    # 8 ln(n/8)/ln 16 = 2 log2(n/8)
    return min(15, 8 + _floor_log_ratio(n, 8, 2, 1))


def t5_bucket_matrix(T, causal, ladder=None):
    """[T, T] int64 bucket index for query i (rows), key j (cols). With a distance ladder s
    (T ints), the distance |i - j| reads as s[|i - j|] and the side as the sign of i - j."""
    s = list(range(T)) if ladder is None else [int(v) for v in ladder]
    out = np.zeros((T, T), dtype=np.int64)
    if causal:
        table = [t5_bucket_causal(s[n]) for n in range(T)]
        for i in range(T):
            for j in range(T):
                out[i, j] = table[max(i - j, 0)]
    else:
        table = [t5_bucket_bidir_abs(s[n]) for n in range(T)]
        for i in range(T):
            for j in range(T):
                out[i, j] = table[abs(i - j)] + (16 if j > i else 0)
    return torch.from_numpy(out)


def _straight_through_clamp(x, lo):
    """Forward max(x, lo); backward identity to the raw value."""
    return x + (torch.clamp(x, min=lo) - x).detach()


def _activation(name):
    if name == "leaky_relu":
        return lambda u: F.leaky_relu(u, LEAKY_SLOPE)
    if name == "relu":
        return F.relu
    if name == "gelu":
        return lambda u: F.gelu(u)  # exact erf form
    raise ValueError(name)


def _grid(T):
    idx = torch.arange(T, dtype=DTYPE)
    i = idx[:, None].expand(T, T)
    j = idx[None, :].expand(T, T)
    return i, j


def _kerple_side(p_raw, a_raw, dist):
    p = _straight_through_clamp(p_raw, KERPLE_MIN)
    a = _straight_through_clamp(a_raw, KERPLE_MIN)
    return -p[:, None, None] * torch.log(1.0 + a[:, None, None] * dist[None])


def _fire_mlp(P, prefix, side, r, act):
    """r [T, T] -> [H, T, T] via fc2(act(fc1(r))); side is "" (left) or "_right"."""
    w1, b1 = P[prefix + "fc1%s.weight" % side], P[prefix + "fc1%s.bias" % side]
    w2, b2 = P[prefix + "fc2%s.weight" % side], P[prefix + "fc2%s.bias" % side]
    h = act(F.linear(r.unsqueeze(-1), w1, b1))
    return F.linear(h, w2, b2).permute(2, 0, 1)


def position_bias(model, layer, T, ladder=None):
    """The additive bias beta [H, T, T] of layer `layer` (before DAPE), or None.

    Row i is the query, column j the key. In causal mode the values at j > i are finite
    but meaningless (they are masked). ladder: None, or the layer's randomized distance
    ladder (T ints, s_0 = 0 < s_1 < ...): every distance d = |i - j| reads as s_d, FIRE's
    row normaliser included (docs/positional-encodings.md, "Randomized positions").
    """
    c = model.config
    P = model.params
    H = c.n_heads
    pre = "layers.%d.pe." % layer
    kind = c.base_pe
    i, j = _grid(T)
    s = torch.arange(T, dtype=DTYPE) if ladder is None else torch.as_tensor(
        np.asarray(ladder, dtype=np.float64))
    right = j > i
    abs_dist = s[torch.abs(i - j).long()]                  # s_{|i-j|}
    zero = torch.zeros((), dtype=DTYPE)
    left_dist = torch.where(right, zero, abs_dist)       # s_{i-j} where j <= i, else 0
    right_dist = torch.where(right, abs_dist, zero)      # s_{j-i} where j > i, else 0

    if kind in ("nope", "rope"):
        return None

    if kind == "alibi":
        m = torch.tensor(alibi_slopes(H), dtype=DTYPE)[:, None, None]
        if c.causal:
            return -m * left_dist[None]
        offset = torch.where(j < i, torch.tensor(0.5, dtype=DTYPE), torch.tensor(0.0, dtype=DTYPE))
        return -m * abs_dist[None] + m * offset[None]

    if kind == "kerple":
        beta = _kerple_side(P[pre + "kerple.p"], P[pre + "kerple.a"], left_dist)
        if c.causal:
            return beta
        beta_r = _kerple_side(P[pre + "kerple.p_right"], P[pre + "kerple.a_right"], right_dist)
        return torch.where(right[None], beta_r, beta)

    if kind == "fire":
        act = (lambda u: F.leaky_relu(u, LEAKY_SLOPE)) if c.is_dape else F.relu
        cc = P[pre + "fire.c"]
        lam = P[pre + "fire.lambda"]
        thresh = torch.abs(lam * c.fire_L0)
        rows = torch.arange(T)
        if not c.causal:
            rows = torch.maximum(rows, (T - 1) - rows)
        M = torch.maximum(s[rows], thresh.expand(T))   # the largest distance row i sees
        N = torch.log(1.0 + torch.abs(cc * M)) + FIRE_EPS
        dist = left_dist if c.causal else abs_dist
        r = torch.log(1.0 + torch.abs(cc * dist)) / N[:, None]
        beta = _fire_mlp(P, pre + "fire.", "", r, act)
        if c.causal:
            return beta
        beta_r = _fire_mlp(P, pre + "fire.", "_right", r, act)
        return torch.where(right[None], beta_r, beta)

    if kind == "t5":
        idx = t5_bucket_matrix(T, c.causal, ladder)           # [T, T]
        table = P["t5.bias"]                                   # [32, H]
        return math.sqrt(c.head_dim) * table[idx].permute(2, 0, 1)

    raise ValueError(kind)


def dape_mlp(model, layer, z):
    """f(z) for z [B, C, T, T] (channels = heads) -> [B, H, T, T]."""
    P = model.params
    pre = "layers.%d.dape." % layer
    act = _activation(model.config.dape_activation)
    zz = z.permute(0, 2, 3, 1)
    u = F.linear(zz, P[pre + "fc1.weight"], P[pre + "fc1.bias"])
    o = F.linear(act(u), P[pre + "fc2.weight"], P[pre + "fc2.bias"])
    return o.permute(0, 3, 1, 2)


def attention_logits(model, layer, s, beta):
    """Pre-mask logits l from scaled scores s [B, H, T, T] and bias beta [H, T, T] or None."""
    c = model.config
    if not c.is_dape:
        return s if beta is None else s + beta[None]
    if c.pe == "dape-nope":
        return s + dape_mlp(model, layer, s)
    b = beta[None].expand_as(s)
    if c.dape_variant == "concat_residual":
        return s + b + dape_mlp(model, layer, torch.cat([s, b], dim=1))
    if c.dape_variant == "concat":
        return s + dape_mlp(model, layer, torch.cat([s, b], dim=1))
    if c.dape_variant == "add_residual":
        return s + b + dape_mlp(model, layer, s + b)
    raise ValueError(c.dape_variant)


def rope(x, positions=None):
    """Half-split RoPE on x [B, H, T, HS], base 10000: row t rotated by positions[t] * theta
    (positions: T ints, default 0..T-1)."""
    T, HS = x.shape[-2], x.shape[-1]
    half = HS // 2
    m = torch.arange(half, dtype=DTYPE)
    theta = torch.pow(torch.tensor(10000.0, dtype=DTYPE), -2.0 * m / HS)
    pos = torch.arange(T, dtype=DTYPE) if positions is None else torch.as_tensor(
        np.asarray(positions, dtype=np.float64))
    ang = pos[:, None] * theta[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# --------------------------------------------------------------------------------------
# Model

def _attention(model, layer, y, positions):
    """positions: None or this layer's ladder (bias PEs) or RoPE positions, T ints."""
    c = model.config
    P = model.params
    B, T, d = y.shape
    H, HS = c.n_heads, c.head_dim
    pre = "layers.%d.attn." % layer
    qkv = F.linear(y, P[pre + "qkv.weight"], P.get(pre + "qkv.bias"))   # [B, T, 3d]

    def heads(t):
        return t.reshape(B, T, H, HS).permute(0, 2, 1, 3)

    q, k, v = heads(qkv[..., :d]), heads(qkv[..., d:2 * d]), heads(qkv[..., 2 * d:])
    if c.pe == "rope":
        q, k = rope(q, positions), rope(k, positions)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HS)
    beta = position_bias(model, layer, T, positions)
    logits = attention_logits(model, layer, s, beta)
    if c.causal:
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        logits = logits.masked_fill(mask, float("-inf"))
    prob = torch.softmax(logits, dim=-1)
    o = torch.matmul(prob, v).permute(0, 2, 1, 3).reshape(B, T, d)
    return F.linear(o, P[pre + "proj.weight"], P.get(pre + "proj.bias"))


def _layer_positions(c, positions, T):
    """Per layer, the positions the attention reads (None: the deterministic 0..T-1)."""
    if positions is None:
        if c.randomized_positions > 0 and c.reads_positions:
            raise ValueError("randomized_positions = %d: pass every layer's drawn positions "
                             "(the oracle does not draw them)" % c.randomized_positions)
        return [None] * c.n_layers
    if len(positions) != c.n_layers:
        raise ValueError("positions: %d layers given, the model has %d" % (len(positions), c.n_layers))
    for l, p in enumerate(positions):
        if len(p) != T:
            raise ValueError("positions of layer %d: %d entries for T = %d" % (l, len(p), T))
        if c.base_pe not in ("nope", "rope") and int(p[0]) != 0:
            raise ValueError("the distance ladder of layer %d must start at 0" % l)
    return list(positions)


def forward(model, inputs, positions=None):
    """Logits [B, T, O] for int64 inputs [B, T]; positions: see the module docstring."""
    c = model.config
    P = model.params
    inputs = torch.as_tensor(np.asarray(inputs), dtype=torch.int64)
    if inputs.dim() == 1:
        inputs = inputs[None]
    d = c.d_model
    act = _activation(c.mlp_activation)

    def ln(x, name):
        return F.layer_norm(x, (d,), P[name + ".weight"], P[name + ".bias"], LN_EPS)

    def mlp(x, pre):
        hdn = act(F.linear(x, P[pre + "mlp.fc.weight"], P[pre + "mlp.fc.bias"]))
        return F.linear(hdn, P[pre + "mlp.proj.weight"], P[pre + "mlp.proj.bias"])

    layer_positions = _layer_positions(c, positions, inputs.shape[1])
    x = P["embed.weight"][inputs]
    if c.scale_embedding:
        x = x * math.sqrt(d)
    for l in range(c.n_layers):
        pre = "layers.%d." % l
        if c.norm == "pre":
            x = x + _attention(model, l, ln(x, pre + "ln1"), layer_positions[l])
            x = x + mlp(ln(x, pre + "ln2"), pre)
        else:
            x = ln(x + _attention(model, l, x, layer_positions[l]), pre + "ln1")
            x = ln(x + mlp(x, pre), pre + "ln2")
    if c.norm == "pre":
        x = ln(x, "ln_f")
    return F.linear(x, P["head.weight"], P.get("head.bias"))


def loss_value(model, inputs, targets, positions=None):
    """Mean cross-entropy over the positions with a target (targets >= 0), as a differentiable
    tensor."""
    logits = forward(model, inputs, positions)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    if targets.dim() == 1:
        targets = targets[None]
    O = logits.shape[-1]
    targets = targets.masked_fill(targets < 0, -1)
    return F.cross_entropy(logits.reshape(-1, O), targets.reshape(-1), ignore_index=-1,
                           reduction="mean")


def loss_and_grads(model, inputs, targets, positions=None):
    """(loss, {name: gradient}) in float64, gradients by torch autograd."""
    for p in model.params.values():
        p.grad = None
    loss = loss_value(model, inputs, targets, positions)
    names = list(model.params.keys())
    grads = torch.autograd.grad(loss, [model.params[n] for n in names], allow_unused=True)
    out = OrderedDict()
    for n, g in zip(names, grads):
        if g is None:
            g = torch.zeros_like(model.params[n])
        out[n] = g.detach().numpy().astype(np.float64).copy()
    return float(loss.detach()), out


def no_decay(name):
    """DAPE-SPEC §1.3 weight-decay rule: LayerNorm tensors and '.bias' names are exempt,
    except the T5 table 't5.bias', which is decayed."""
    if name == "t5.bias":
        return False
    parts = name.split(".")
    if parts[0] == "ln_f":
        return True
    if len(parts) >= 3 and parts[0] == "layers" and parts[2] in ("ln1", "ln2"):
        return True
    return name.endswith(".bias")


# --------------------------------------------------------------------------------------
# Comparison helper shared by the check scripts

ROUNDOFF_FRAC = 1e-12


def compare_grads(ref, test, roundoff_frac=ROUNDOFF_FRAC):
    """Per-tensor relative error of `test` against the reference `ref` (dicts name -> array).

    rel = max|test - ref| / max(max|ref|, 1e-30), except for tensors whose reference is at
    float64 round-off level (max|ref| < roundoff_frac * G, G = the largest |ref| over all
    tensors): their exact gradient is zero (e.g. a bias added uniformly to a softmax row),
    so the error is measured against G instead. Returns {name: (rel, is_zero_class)} for
    names present in both.
    """
    G = max([float(np.abs(np.asarray(v)).max()) if np.asarray(v).size else 0.0
             for v in ref.values()] + [0.0])
    out = {}
    for n in ref:
        if n not in test:
            continue
        r = np.asarray(ref[n], dtype=np.float64)
        t = np.asarray(test[n], dtype=np.float64)
        if r.shape != t.shape:
            out[n] = (float("inf"), False)
            continue
        if r.size == 0:
            out[n] = (0.0, False)
            continue
        diff = float(np.abs(t - r).max())
        rmax = float(np.abs(r).max())
        zero = rmax < roundoff_frac * G
        den = G if zero else max(rmax, 1e-30)
        rel = diff / den if np.isfinite(diff) else float("inf")
        out[n] = (rel, zero)
    return out
