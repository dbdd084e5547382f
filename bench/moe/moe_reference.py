#!/usr/bin/python3
"""The isoflop MoE feed-forward layer in PyTorch (python3-torch, the same LibTorch version), for
side-by-side timing against bench/moe/moe_bench.cc: a bias-free linear router, softmax in fp32,
top-2 renormalised over the two, the Switch balance loss and the router z-loss, SwiGLU experts
of half the dense hidden size, and two dispatches: the one isoflop uses (assignments sorted by
expert, one contiguous batch per expert, one index_add_) and the per-expert torch.where loop of
Hugging Face's MixtralSparseMoeBlock, the usual PyTorch implementation. Also the dense SwiGLU
MLP of the same active size. Usage: /usr/bin/python3 moe_reference.py THREADS REPS
"""
import sys
import time

import torch
import torch.nn.functional as F


def default_dff(d):  # SwiGLU: ceil(8d/3) rounded up to a multiple of 8 (accounting::DefaultDff)
    return ((8 * d + 2) // 3 + 7) // 8 * 8


class SwiGlu(torch.nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.fc = torch.nn.Linear(d, ff, bias=False)
        self.gate = torch.nn.Linear(d, ff, bias=False)
        self.proj = torch.nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.proj(F.silu(self.fc(x)) * self.gate(x))


class Moe(torch.nn.Module):
    def __init__(self, d, experts, top_k, ff, dispatch):
        super().__init__()
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.experts = torch.nn.ModuleList(SwiGlu(d, ff) for _ in range(experts))
        self.k, self.dispatch = top_k, dispatch
        self.aux_loss = self.z_loss = None

    def forward(self, x):
        B, T, C = x.shape
        E, K = len(self.experts), self.k
        xf = x.reshape(-1, C)
        N = xf.size(0)
        logits = self.router(xf).float()
        probs = torch.softmax(logits, -1)
        weights, chosen = probs.topk(K, -1)
        weights = weights / weights.sum(-1, keepdim=True)
        counts = torch.bincount(chosen.reshape(-1), minlength=E)
        self.aux_loss = 0.01 * E * ((counts.float() / (N * K)) * probs.mean(0)).sum()
        self.z_loss = 0.001 * torch.logsumexp(logits, -1).pow(2).mean()
        out = torch.zeros_like(xf)
        if self.dispatch == "sorted":
            A = N * K
            expert_of = chosen.t().reshape(A)
            token_of = torch.arange(N).repeat(K)
            weight_of = weights.t().reshape(A)
            order = (expert_of * A + torch.arange(A)).argsort()
            sorted_token = token_of[order]
            sorted_weight = weight_of[order]
            sorted_x = xf.index_select(0, sorted_token)
            outs, rows, start = [], [], 0
            for e, n in enumerate(counts.tolist()):
                if n:
                    y = self.experts[e](sorted_x.narrow(0, start, n))
                    outs.append(y * sorted_weight.narrow(0, start, n).unsqueeze(1))
                    rows.append(sorted_token.narrow(0, start, n))
                start += n
            out = out.index_add(0, torch.cat(rows), torch.cat(outs))
        else:  # MixtralSparseMoeBlock (transformers): one torch.where per expert
            mask = F.one_hot(chosen, E).permute(2, 1, 0)  # (E, K, N)
            for e in range(E):
                idx, top = torch.where(mask[e])
                if top.numel() == 0:
                    continue
                y = self.experts[e](xf[top]) * weights[top, idx, None]
                out = out.index_add(0, top, y.to(xf.dtype))
        return out.view(B, T, C)


def seconds(layer, d, reps):
    torch.manual_seed(1)
    x = torch.randn(16, 64, d, requires_grad=True)
    times = []
    for r in range(reps + 3):
        t0 = time.perf_counter()
        y = layer(x)
        loss = y.pow(2).mean()
        if isinstance(layer, Moe):
            loss = loss + layer.aux_loss + layer.z_loss
        loss.backward()
        if r >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    torch.set_num_threads(threads)
    for d in (128, 256):
        ff = default_dff(d)
        torch.manual_seed(0)
        print(f"layer  C={d:<4d}   {'dense':8s} forward+backward "
              f"{1e3 * seconds(SwiGlu(d, ff), d, reps):8.3f} ms  (pytorch)")
        for experts in (8, 16):
            for dispatch in ("sorted", "mixtral-loop"):
                torch.manual_seed(0)
                layer = Moe(d, experts, 2, ff // 2, dispatch)
                name = f"moe{experts}x2"
                print(f"layer  C={d:<4d}   {name:8s} forward+backward "
                      f"{1e3 * seconds(layer, d, reps):8.3f} ms  (pytorch {dispatch})")


if __name__ == "__main__":
    main()
