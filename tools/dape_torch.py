"""dape_torch: a dape model as a PyTorch nn.Module, for the files `dape export` writes.

    import sys; sys.path.insert(0, "tools")
    import dape_torch

    model = dape_torch.load("model.pt")        # model.pt (state_dict) + model.json (config) beside it
    logits = model(tokens)                     # int64 [B, T] -> [B, T, O] (O = output_size or vocab_size)
    nll = model.loss(inputs, targets, last=256)  # mean NLL of the last 256 positions (DAPE-SPEC §5.1)

    model = dape_torch.load_h5("runs/x/model.h5")   # straight from a weight file (needs h5py)

The module's state_dict names are the weight-file names of docs/checkpoint-format.md
("layers.0.attn.qkv.weight", "layers.0.pe.kerple.p", "layers.0.dape.fc1.weight", "t5.bias", ...), so
`DapeGPT(config).load_state_dict(torch.load("model.pt"))` loads an export with strict checking.

The math is DAPE-SPEC §1, §3 and §4, the same as dape's CPU evaluation forward: no position embedding, scores
scaled by 1/sqrt(d_h) before the positional bias, DAPE logits s + b + f([s; b]) (and its variants), causal
mask (unless model.causal is false), LayerNorm eps 1e-5. The attention is materialised: memory grows with
B * T^2 * (H + dape.width), so keep T to a few thousand; dape eval handles long lengths in linear memory.
Docs: docs/export.md.

Backbone options (the model.* keys of the config; absent keys mean DAPE-SPEC §1):
    norm             pre: x + f(LN(x)) and a final ln_f (GPT-2); post: LN(x + f(x)) after each sublayer, no
                     ln_f (the CHE encoder, shared/design/CHE.md §3.5)
    mlp_activation   gelu (exact) | relu | leaky_relu (slope 0.01)
    scale_embedding  the token embedding times sqrt(d_model)
    attention_bias   false: the qkv and output projections have no bias tensors
    head_bias        true: the head has a bias (head.bias)
    output_size      rows of the head (classes); 0 means vocab_size
    dropout          a training-time option; this module is the inference forward and never applies it
    init             how dape initialised the weights; irrelevant once they are loaded

Randomized positions (model.randomized_positions = L > 0, docs/positional-encodings.md): dape trains such a
model, and evaluates it, with positions drawn afresh per layer and per forward pass, so the model has no
deterministic forward. forward(), position_losses() and loss() therefore take `positions`, one sequence of
T ints per layer: the distance ladder s_0 = 0 < s_1 < ... < s_{T-1} of a bias PE (ALiBi, Kerple, FIRE, T5 and
their DAPE forms), or T sorted absolute positions for RoPE. `model.sample_positions(T, generator)` draws them
as dape does (uniformly from {1..L-1}, resp. {0..L-1}; not the same numbers, as the generators differ).
Without `positions` such a model raises ValueError rather than pick a draw silently; NoPE and DAPE-NoPE read
no positions and need none. Any model accepts `positions` (an identity ladder, or 0..T-1 for RoPE, gives
the deterministic forward).

Targets below 0 mark ignored positions (the input part of a CHE sequence): their loss is 0 in
position_losses() and loss() averages over the other positions.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-5
KERPLE_MIN = 0.01  # forward clamp of Kerple p and a (DAPE-SPEC §3.4)
FIRE_EPS = 1e-6
LEAKY_SLOPE = 0.01
T5_BUCKETS = 32
ROPE_BASE = 10000.0

PES = ("nope", "rope", "alibi", "kerple", "fire", "t5",
       "dape-nope", "dape-alibi", "dape-kerple", "dape-fire")
NORMS = ("pre", "post")
ACTIVATIONS = ("leaky_relu", "relu", "gelu")


class ModelConfig:
    """The `model` object of a weight file's config attribute (docs/checkpoint-format.md)."""

    def __init__(self, config):
        if isinstance(config, (str, bytes)):
            config = json.loads(config)
        m = config.get("model", config)
        self.n_layers = int(m["n_layers"])
        self.d_model = int(m["d_model"])
        self.n_heads = int(m["n_heads"])
        self.vocab_size = int(m["vocab_size"])
        self.pe = str(m["pe"])
        self.causal = bool(m.get("causal", True))
        dape = m.get("dape", {})
        fire = m.get("fire", {})
        self.dape_variant = str(dape.get("variant", "concat_residual"))
        self.dape_width = int(dape.get("width", 32))
        self.dape_activation = str(dape.get("activation", "leaky_relu"))
        self.fire_width = int(fire.get("width", 32))
        self.fire_L0 = int(fire.get("L0", 64))
        self.norm = str(m.get("norm", "pre"))
        self.mlp_activation = str(m.get("mlp_activation", "gelu"))
        self.scale_embedding = bool(m.get("scale_embedding", False))
        self.attention_bias = bool(m.get("attention_bias", True))
        self.head_bias = bool(m.get("head_bias", False))
        self.output_size = int(m.get("output_size", 0))
        self.dropout = float(m.get("dropout", 0.0))
        self.randomized_positions = int(m.get("randomized_positions", 0))
        self.init = str(m.get("init", "gpt"))
        if self.pe not in PES:
            raise ValueError("model.pe = %r: expected one of %s" % (self.pe, ", ".join(PES)))
        if self.d_model % self.n_heads:
            raise ValueError("model.d_model must be divisible by model.n_heads")
        if self.norm not in NORMS:
            raise ValueError("model.norm = %r: expected one of %s" % (self.norm, ", ".join(NORMS)))
        for key, value in (("model.mlp_activation", self.mlp_activation),
                           ("model.dape.activation", self.dape_activation)):
            if value not in ACTIVATIONS:
                raise ValueError("%s = %r: expected one of %s" % (key, value, ", ".join(ACTIVATIONS)))
        if self.output_size < 0:
            raise ValueError("model.output_size = %d: expected 0 (the vocabulary) or a number of classes"
                             % self.output_size)
        if self.randomized_positions < 0:
            raise ValueError("model.randomized_positions = %d: expected 0 (off) or the largest position L"
                             % self.randomized_positions)

    @property
    def head_size(self):
        return self.d_model // self.n_heads

    @property
    def is_dape(self):
        return self.pe.startswith("dape-")

    @property
    def base_pe(self):
        """The encoding under the DAPE MLP: nope, rope, alibi, kerple, fire or t5."""
        return self.pe[len("dape-"):] if self.is_dape else self.pe

    @property
    def outputs(self):
        """Rows of the head: output_size classes, or vocab_size for a language model."""
        return self.output_size or self.vocab_size

    def to_dict(self):
        return {"model": {"n_layers": self.n_layers, "d_model": self.d_model, "n_heads": self.n_heads,
                          "vocab_size": self.vocab_size, "pe": self.pe, "causal": self.causal,
                          "dape": {"variant": self.dape_variant, "width": self.dape_width,
                                   "activation": self.dape_activation},
                          "fire": {"width": self.fire_width, "L0": self.fire_L0},
                          "norm": self.norm, "mlp_activation": self.mlp_activation,
                          "scale_embedding": self.scale_embedding, "attention_bias": self.attention_bias,
                          "head_bias": self.head_bias, "output_size": self.output_size,
                          "dropout": self.dropout, "randomized_positions": self.randomized_positions,
                          "init": self.init}}


def _activation(name):
    if name == "leaky_relu":
        return lambda x: F.leaky_relu(x, LEAKY_SLOPE)
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    raise ValueError("unknown activation %r" % name)


def alibi_slopes(n_heads):
    """Per-head ALiBi slopes in head order (DAPE-SPEC §3.3), any head count."""
    c = 1 << (n_heads.bit_length() - 1)
    slopes = [2.0 ** (-8.0 * k / c) for k in range(1, c + 1)]
    slopes += [2.0 ** (-4.0 * (2 * k - 1) / c) for k in range(1, n_heads - c + 1)]
    return slopes


def _largest_k(limit_ok):
    k = 0
    while limit_ok(k + 1):
        k += 1
    return k


def t5_bucket(n, causal):
    """T5 bucket of a non-negative distance n (DAPE-SPEC §3.6), computed with integers only.

    causal: n below 16 is its own bucket, else min(31, 16 + floor((16/3) log2(n/16))).
    one direction of a bidirectional model: n below 8, else min(15, 8 + floor(2 log2(n/8))).
    """
    if causal:
        if n < 16:
            return n
        # k <= (16/3) log2(n/16)  <=>  2^(3k) * 16^16 <= n^16
        return min(31, 16 + _largest_k(lambda k: (1 << (3 * k)) * 16 ** 16 <= n ** 16))
    if n < 8:
        return n
    # k <= 2 log2(n/8)  <=>  2^k * 64 <= n^2
    return min(15, 8 + _largest_k(lambda k: (1 << k) * 64 <= n * n))


def _distances(T, device):
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return i, j


def _ladder(T, ladder, device):
    """The distance ladder as a long tensor [T]: the given one, or 0..T-1 (the deterministic distances)."""
    if ladder is None:
        return torch.arange(T, device=device)
    return torch.as_tensor(ladder, dtype=torch.long, device=device)


def _ladder_distances(T, ladder, device):
    """(left, right, both) [T, T] long: s_{|i-j|} where j <= i (else 0), where j > i (else 0), and for all."""
    i, j = _distances(T, device)
    both = _ladder(T, ladder, device)[(i - j).abs()]
    right = j > i
    return both.masked_fill(right, 0), both.masked_fill(~right, 0), both


class KerpleBias(nn.Module):
    """beta_h(i, j) = -p_h ln(1 + a_h |i - j|), p and a clamped at 0.01 in the forward."""

    def __init__(self, config):
        super().__init__()
        H = config.n_heads
        self.causal = config.causal
        self.p = nn.Parameter(torch.zeros(H))
        self.a = nn.Parameter(torch.zeros(H))
        if not self.causal:
            self.p_right = nn.Parameter(torch.zeros(H))
            self.a_right = nn.Parameter(torch.zeros(H))

    @staticmethod
    def _side(p, a, dist):
        p = p.clamp(min=KERPLE_MIN)[:, None, None]
        a = a.clamp(min=KERPLE_MIN)[:, None, None]
        return -p * torch.log1p(a * dist[None])

    def forward(self, T, ladder=None):
        i, j = _distances(T, self.p.device)
        dtype = self.p.dtype
        left_dist, right_dist, _ = _ladder_distances(T, ladder, self.p.device)
        left = self._side(self.p, self.a, left_dist.to(dtype))
        if self.causal:
            return left
        right = self._side(self.p_right, self.a_right, right_dist.to(dtype))
        return torch.where((j > i)[None], right, left)


class FireBias(nn.Module):
    """FIRE (DAPE-SPEC §3.5): an MLP 1 -> D_F -> H of the log distance, normalised per query row."""

    def __init__(self, config):
        super().__init__()
        H, DF = config.n_heads, config.fire_width
        self.causal = config.causal
        self.L0 = float(config.fire_L0)
        self.act = _activation("leaky_relu") if config.is_dape else F.relu
        self.c = nn.Parameter(torch.zeros(()))
        self.register_parameter("lambda", nn.Parameter(torch.zeros(())))
        self.fc1 = nn.Linear(1, DF)
        self.fc2 = nn.Linear(DF, H)
        if not self.causal:
            self.fc1_right = nn.Linear(1, DF)
            self.fc2_right = nn.Linear(DF, H)

    def forward(self, T, ladder=None):
        i, j = _distances(T, self.c.device)
        dtype = self.c.dtype
        lam = getattr(self, "lambda")
        threshold = torch.abs(lam * self.L0)
        rows = torch.arange(T, device=self.c.device)
        if not self.causal:
            rows = torch.maximum(rows, (T - 1) - rows)
        largest = _ladder(T, ladder, self.c.device)[rows].to(dtype)  # the largest distance row i sees
        norm = torch.log1p(torch.abs(self.c * torch.maximum(largest, threshold))) + FIRE_EPS  # [T]
        left_dist, _, both = _ladder_distances(T, ladder, self.c.device)
        dist = (left_dist if self.causal else both).to(dtype)
        r = (torch.log1p(torch.abs(self.c * dist)) / norm[:, None])[..., None]  # [T, T, 1]
        beta = self.fc2(self.act(self.fc1(r))).permute(2, 0, 1)
        if self.causal:
            return beta
        right = self.fc2_right(self.act(self.fc1_right(r))).permute(2, 0, 1)
        return torch.where((j > i)[None], right, beta)


class AlibiBias(nn.Module):
    """-m_h |i - j|; bidirectional models add m_h / 2 for keys left of the query (CHE.md §3.6)."""

    def __init__(self, config):
        super().__init__()
        self.causal = config.causal
        self.slopes = alibi_slopes(config.n_heads)

    def forward(self, T, dtype, device, ladder=None):
        i, j = _distances(T, device)
        m = torch.tensor(self.slopes, dtype=dtype, device=device)[:, None, None]
        left_dist, _, both = _ladder_distances(T, ladder, device)
        if self.causal:
            return -m * left_dist.to(dtype)[None]
        return -m * both.to(dtype)[None] + 0.5 * m * (j < i).to(dtype)[None]


class T5Table(nn.Module):
    """One bucket table [32, H] for all layers; beta = sqrt(d_h) * bias[bucket(i - j), h]."""

    def __init__(self, config):
        super().__init__()
        self.causal = config.causal
        self.scale = math.sqrt(config.head_size)
        self.bias = nn.Parameter(torch.zeros(T5_BUCKETS, config.n_heads))

    def buckets(self, T, ladder=None):
        """[T, T] bucket of query i, key j: of the distance s_{|i-j|} on the side of the sign of i - j."""
        distances = _ladder(T, ladder, "cpu").tolist()
        table = torch.tensor([t5_bucket(n, self.causal) for n in distances], device=self.bias.device)
        i, j = _distances(T, self.bias.device)
        if self.causal:
            return table[(i - j).clamp(min=0)]
        return table[(i - j).abs()] + 16 * (j > i).long()

    def forward(self, T, ladder=None):
        return self.scale * self.bias[self.buckets(T, ladder)].permute(2, 0, 1)


class PositionalParameters(nn.Module):
    """The trainable bias of one layer, under the weight-file prefix layers.{i}.pe.{kerple,fire}."""

    def __init__(self, config):
        super().__init__()
        if config.base_pe == "kerple":
            self.kerple = KerpleBias(config)
        elif config.base_pe == "fire":
            self.fire = FireBias(config)

    def forward(self, T, ladder=None):
        return self.kerple(T, ladder) if hasattr(self, "kerple") else self.fire(T, ladder)


class DapeMLP(nn.Module):
    """f: R^{2H} (or R^H) -> R^H, applied at every (b, i, j) across the heads (DAPE-SPEC §4.1)."""

    def __init__(self, config):
        super().__init__()
        H = config.n_heads
        one_input = config.pe == "dape-nope" or config.dape_variant == "add_residual"
        self.fc1 = nn.Linear(H if one_input else 2 * H, config.dape_width)
        self.fc2 = nn.Linear(config.dape_width, H)
        self.act = _activation(config.dape_activation)

    def forward(self, z):
        """z [B, C, T, T] (channels = heads) -> [B, H, T, T]."""
        out = self.fc2(self.act(self.fc1(z.permute(0, 2, 3, 1))))
        return out.permute(0, 3, 1, 2)


def rotate_half_split(x, positions=None):
    """RoPE on x [B, H, T, d_h] (DAPE-SPEC §3.2, NeoX half-split layout): row t rotated by positions[t]
    (T ints; default 0..T-1) times each frequency."""
    T, hs = x.shape[-2], x.shape[-1]
    half = hs // 2
    theta = ROPE_BASE ** (-2.0 * torch.arange(half, dtype=torch.float64) / hs)
    pos = torch.arange(T) if positions is None else torch.as_tensor(positions)
    angle = pos.to(torch.float64)[:, None] * theta[None, :]
    cos, sin = angle.cos().to(x.dtype).to(x.device), angle.sin().to(x.dtype).to(x.device)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.qkv = nn.Linear(d, 3 * d, bias=config.attention_bias)
        self.proj = nn.Linear(d, d, bias=config.attention_bias)

    def forward(self, x, config, logits_of, rope_positions=None):
        B, T, d = x.shape
        H, hs = config.n_heads, config.head_size
        q, k, v = self.qkv(x).split(d, dim=-1)  # each [B, T, d], heads in order
        q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in (q, k, v))
        if config.base_pe == "rope":
            q, k = rotate_half_split(q, rope_positions), rotate_half_split(k, rope_positions)
        s = q @ k.transpose(-1, -2) / math.sqrt(hs)
        logits = logits_of(s)
        if config.causal:
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        out = torch.softmax(logits, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)
        self.act = _activation(config.mlp_activation)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.config = config
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.mlp = MLP(config)
        if config.base_pe in ("kerple", "fire"):
            self.pe = PositionalParameters(config)
        if config.is_dape:
            self.dape = DapeMLP(config)

    def attention_logits(self, s, bias):
        """Logits before the mask from scaled scores s [B, H, T, T] and the bias [H, T, T] or None."""
        c = self.config
        if not c.is_dape:
            return s if bias is None else s + bias[None]
        if bias is None:  # dape-nope
            return s + self.dape(s)
        b = bias[None].expand_as(s)
        if c.dape_variant == "concat_residual":
            return s + b + self.dape(torch.cat([s, b], dim=1))
        if c.dape_variant == "concat":
            return s + self.dape(torch.cat([s, b], dim=1))
        if c.dape_variant == "add_residual":
            return s + b + self.dape(s + b)
        raise ValueError("unknown dape.variant %r" % c.dape_variant)

    def forward(self, x, shared_bias, positions):
        """shared_bias(T, ladder): the bias shared by all layers (ALiBi, T5) or None; positions: this layer's
        distance ladder or RoPE positions (T ints) or None."""
        c = self.config
        T = x.shape[1]
        ladder = positions if c.base_pe not in ("nope", "rope") else None
        bias = self.pe(T, ladder) if hasattr(self, "pe") else shared_bias(T, ladder)
        rope_positions = positions if c.base_pe == "rope" else None

        def attention(y):
            return self.attn(y, c, lambda s: self.attention_logits(s, bias), rope_positions)

        if c.norm == "pre":
            x = x + attention(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + attention(x))
        return self.ln2(x + self.mlp(x))


class DapeGPT(nn.Module):
    """The dape GPT (DAPE-SPEC §1.1): token embedding, blocks, a final LayerNorm (pre-LN only), untied head."""

    def __init__(self, config):
        super().__init__()
        self.config = config if isinstance(config, ModelConfig) else ModelConfig(config)
        c = self.config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        if c.norm == "pre":
            self.ln_f = nn.LayerNorm(c.d_model, eps=LN_EPS)
        self.head = nn.Linear(c.d_model, c.outputs, bias=c.head_bias)
        if c.base_pe == "t5":
            self.t5 = T5Table(c)
        self._alibi = AlibiBias(c) if c.base_pe == "alibi" else None

    def sample_positions(self, T, generator=None):
        """One draw of randomized positions for a sequence of T tokens, per layer, as dape draws them
        (docs/positional-encodings.md): a distance ladder (0, then T-1 sorted distinct values of {1..L-1}) for
        a bias PE, T sorted distinct values of {0..L-1} for RoPE; None for a PE that reads no positions."""
        c = self.config
        L = c.randomized_positions
        if L <= 0:
            raise ValueError("model.randomized_positions is 0: the model has no randomized positions to draw")
        if T > L:
            raise ValueError("a sequence of %d tokens needs more than model.randomized_positions = %d "
                             "positions" % (T, L))
        if c.base_pe == "nope":
            return None

        def draw():
            if c.base_pe == "rope":
                return torch.randperm(L, generator=generator)[:T].sort().values
            distances = (torch.randperm(L - 1, generator=generator)[:T - 1] + 1).sort().values
            return torch.cat([torch.zeros(1, dtype=torch.long), distances])

        return [draw() for _ in range(c.n_layers)]

    def _layer_positions(self, positions, T):
        """Per layer, the positions its attention reads (None: the deterministic ones); see the module
        docstring."""
        c = self.config
        if c.base_pe == "nope":
            return [None] * c.n_layers
        if positions is None:
            if c.randomized_positions > 0:
                raise ValueError(
                    "this model was trained with randomized positions (model.randomized_positions = %d) and "
                    "has no deterministic forward: pass positions=model.sample_positions(T) (one draw, as "
                    "dape makes one per evaluated batch) or the per-layer positions you want"
                    % c.randomized_positions)
            return [None] * c.n_layers
        if len(positions) != c.n_layers:
            raise ValueError("positions: %d sequences given, one per layer expected (%d layers)"
                             % (len(positions), c.n_layers))
        out = []
        for layer, p in enumerate(positions):
            p = torch.as_tensor(p, dtype=torch.long).cpu()
            if p.shape != (T,):
                raise ValueError("positions of layer %d: shape %s, expected (%d,)"
                                 % (layer, tuple(p.shape), T))
            if c.base_pe != "rope" and p[0] != 0:
                raise ValueError("positions of layer %d: a distance ladder starts at 0, got %d"
                                 % (layer, int(p[0])))
            out.append(p)
        return out

    def forward(self, tokens, positions=None):
        """Logits [B, T, O] for token ids [B, T] (or [T]); positions: see the module docstring."""
        c = self.config
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.embed.weight.device)
        if tokens.dim() == 1:
            tokens = tokens[None]
        T = tokens.shape[1]
        dtype, device = self.embed.weight.dtype, self.embed.weight.device

        def shared_bias(T, ladder):
            if self._alibi is not None:
                return self._alibi(T, dtype, device, ladder)
            return self.t5(T, ladder) if hasattr(self, "t5") else None

        x = self.embed(tokens)
        if c.scale_embedding:
            x = x * math.sqrt(c.d_model)
        for block, layer_positions in zip(self.layers, self._layer_positions(positions, T)):
            x = block(x, shared_bias, layer_positions)
        return self.head(self.ln_f(x) if c.norm == "pre" else x)

    def position_losses(self, inputs, targets, positions=None):
        """Cross-entropy at every position, [B, T]; 0 where the target is negative (ignored)."""
        logits = self(inputs, positions)
        targets = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(logits.shape[:2])
        targets = targets.masked_fill(targets < 0, -1)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1,
                               reduction="none").view(targets.shape)

    def loss(self, inputs, targets, last=0, positions=None):
        """Mean NLL over the last `last` positions of each sequence (all when last is 0 or >= T) that have a
        target, as `dape eval --last` scores them."""
        targets = torch.as_tensor(targets, dtype=torch.long)
        losses = self.position_losses(inputs, targets, positions)
        counted = (targets.reshape(losses.shape) >= 0).to(losses.device)
        T = losses.shape[1]
        if 0 < last < T:
            losses, counted = losses[:, T - last:], counted[:, T - last:]
        return losses.sum() / counted.sum()


def config_path_for(pt_path):
    """Where `dape export` puts the config of OUT.pt: OUT.json."""
    root, _ = os.path.splitext(pt_path)
    return root + ".json"


def load(pt_path, config=None, map_location="cpu"):
    """A DapeGPT from an exported state_dict; the config comes from `config` or the JSON beside it."""
    if config is None:
        with open(config_path_for(pt_path)) as f:
            config = json.load(f)
    model = DapeGPT(config)
    state = torch.load(pt_path, map_location=map_location)
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_h5(path):
    """(config dict, {name: numpy array}) from a weight file (tensors at the root) or a checkpoint's
    state.h5 (tensors under model/, the config on the root)."""
    import h5py
    with h5py.File(path, "r") as f:
        group = f["model"] if isinstance(f.get("model"), h5py.Group) else f
        config = group.attrs.get("config", f.attrs.get("config"))
        if config is None:
            raise ValueError("%s: no 'config' attribute (docs/checkpoint-format.md)" % path)
        config = json.loads(config.decode() if isinstance(config, bytes) else config)
        tensors = {name: group[name][()] for name in group if isinstance(group[name], h5py.Dataset)}
    return config, tensors


def load_h5(path):
    """A DapeGPT straight from a weight file (model.h5) or a checkpoint's state.h5."""
    config, tensors = read_h5(path)
    model = DapeGPT(config)
    model.load_state_dict({name: torch.as_tensor(value) for name, value in tensors.items()}, strict=True)
    return model.eval()
