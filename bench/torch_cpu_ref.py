#!/usr/bin/python3
"""The PyTorch CPU reference for dape's CPU training benchmark (bench/train_cpu.cpp runs it).

The same model as dape's (pre-LN GPT, untied head, DAPE-Kerple or Kerple with materialised scores, the way the
official DAPE code computes them), in fp32 eager PyTorch with torch.optim.AdamW and gradient clipping. Prints one
JSON object: step_ms (median), tokens_per_s, peak_rss_mb, params, threads.
"""

import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class KerpleBias(nn.Module):
    def __init__(self, heads):
        super().__init__()
        self.p = nn.Parameter(torch.rand(heads) * 2)
        self.a = nn.Parameter(torch.rand(heads))

    def forward(self, T):
        pos = torch.arange(T)
        dist = (pos[:, None] - pos[None, :]).clamp(min=0).float()
        p = self.p.clamp(min=0.01)[:, None, None]
        a = self.a.clamp(min=0.01)[:, None, None]
        return -p * torch.log1p(a * dist)  # [H, T, T]


class Attention(nn.Module):
    def __init__(self, d, heads, pe, dape_width):
        super().__init__()
        self.heads, self.hs, self.pe = heads, d // heads, pe
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.bias = KerpleBias(heads) if pe in ("kerple", "dape-kerple") else None
        if pe == "dape-kerple":
            self.dape = nn.Sequential(nn.Linear(2 * heads, dape_width), nn.LeakyReLU(0.01),
                                      nn.Linear(dape_width, heads))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.hs).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(self.hs)  # [B, H, T, T]
        if self.bias is not None:
            beta = self.bias(T)
            if self.pe == "dape-kerple":
                z = torch.cat([s, beta.expand(B, -1, -1, -1)], dim=1).permute(0, 2, 3, 1)
                s = s + beta + self.dape(z).permute(0, 3, 1, 2)
            else:
                s = s + beta
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
        y = torch.softmax(s, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d, heads, pe, dape_width):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, pe, dape_width)
        self.fc, self.fc_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, layers, d, heads, vocab, pe, dape_width):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, pe, dape_width) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, inputs, targets):
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--d-model", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--pe", choices=["nope", "kerple", "dape-kerple"], default="dape-kerple")
    ap.add_argument("--dape-width", type=int, default=32)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(args.layers, args.d_model, args.heads, args.vocab, args.pe, args.dape_width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    inputs = torch.randint(0, args.vocab, (args.batch, args.seq_len))
    targets = torch.randint(0, args.vocab, (args.batch, args.seq_len))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    print(json.dumps({
        "step_ms": step_s * 1e3,
        "tokens_per_s": args.batch * args.seq_len / step_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
