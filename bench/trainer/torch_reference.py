#!/usr/bin/python3
"""The isoflop model and training step in PyTorch (python3-torch, same LibTorch version), for
side-by-side throughput against bench/trainer/trainer_bench.cc. Same shapes, init, ops
(explicit causal attention with rotary embeddings, RMSNorm, SwiGLU, tied head), AdamW groups,
clipping and batch. Run with Debian's /usr/bin/python3: python3 torch_reference.py THREADS STEPS
"""
import math
import sys
import time

import torch
import torch.nn.functional as F


class RmsNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):  # x (B, H, T, D)
    T, half = x.size(2), x.size(3) // 2
    cos, sin = cos[:T], sin[:T]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Block(torch.nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.h = h
        self.norm1, self.norm2 = RmsNorm(d), RmsNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.proj = torch.nn.Linear(d, d, bias=False)
        self.fc = torch.nn.Linear(d, ff, bias=False)
        self.gate = torch.nn.Linear(d, ff, bias=False)
        self.mlp_proj = torch.nn.Linear(ff, d, bias=False)

    def attn(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.h))
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(mask, float("-inf"))
        y = torch.softmax(att, -1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        h = self.norm2(x)
        return x + self.mlp_proj(F.silu(self.fc(h)) * self.gate(h))


class Transformer(torch.nn.Module):
    def __init__(self, L, d, h, V, T):
        super().__init__()
        ff = ((8 * d + 2) // 3 + 7) // 8 * 8
        self.tok_emb = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList([Block(d, h, ff) for _ in range(L)])
        self.final_norm = RmsNorm(d)
        D = d // h
        inv = torch.pow(10000.0, -torch.arange(0, D, 2, dtype=torch.float64) / D)
        freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
        self.register_buffer("cos", freqs.cos().float())
        self.register_buffer("sin", freqs.sin().float())
        for m in self.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                torch.nn.init.normal_(m.weight, 0.0, 0.02)
        for b in self.blocks:
            torch.nn.init.normal_(b.proj.weight, 0.0, 0.02 / math.sqrt(2 * L))
            torch.nn.init.normal_(b.mlp_proj.weight, 0.0, 0.02 / math.sqrt(2 * L))

    def forward(self, idx):
        x = self.tok_emb(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin)
        return F.linear(self.final_norm(x), self.tok_emb.weight)


def params_6n_attn(L, d, V, T):
    ff = ((8 * d + 2) // 3 + 7) // 8 * 8
    non_emb = L * (2 * d + 4 * d * d + 3 * d * ff) + d
    return 6 * non_emb + 6 * L * T * d


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    peak = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        peak = max(peak, 10 * 2 * 1024**3 / (time.perf_counter() - t0))
    print(f"threads {threads}  matmul peak {peak / 1e9:.1f} GFLOP/s (fp32 1024^3)")
    V, T, B = 32, 64, 16
    for name, L, d, h in [("small", 1, 32, 2), ("medium", 2, 64, 4), ("large", 4, 128, 8)]:
        torch.manual_seed(0)
        model = Transformer(L, d, h, V, T)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
        n = sum(p.numel() for p in model.parameters())
        gen = torch.Generator().manual_seed(1)
        seconds = 0.0
        for step in range(steps + 5):
            t0 = time.perf_counter()
            # Data: the C++ side samples the synthetic language; random ids cost about the same.
            tokens = torch.randint(0, V, (B, T + 1), generator=gen)
            opt.zero_grad()
            logits = model(tokens[:, :T])
            loss = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1),
                                   reduction="sum")
            (loss / (B * T)).backward()
            loss.item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for g in opt.param_groups:
                g["lr"] = 3e-3
            opt.step()
            if step >= 5:
                seconds += time.perf_counter() - t0
        tps = steps * B * T / seconds
        flops = params_6n_attn(L, d, V, T)
        print(f"py   {name:<6} N={n:<8d} tokens/s {tps:9.0f}  model GFLOP/s {tps * flops / 1e9:6.2f}"
              f"  MFU {100 * tps * flops / peak:5.2f}%")


if __name__ == "__main__":
    main()
