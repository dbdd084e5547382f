#!/usr/bin/env python3
"""The isoflop model and training step in PyTorch on a GPU, for side-by-side throughput with
`isoflop-train --device cuda` (scripts/device-check.sh runs both on the same shape): the model of
torch_reference.py (RMSNorm, rotary embeddings, SwiGLU, tied head, GPT-2 init) with attention
through scaled_dot_product_attention(is_causal=True) as isoflop uses on LibTorch >= 2, bf16
autocast for the forward pass, fp32 cross entropy, gradient accumulation, clipping at 1.0 and
AdamW (β 0.9/0.95, weight decay 0.1 on matrices). Random token ids stand in for the data.

    python3 gpu_reference.py [--device cuda] [--layers 12] [--d-model 768] [--heads 12]
        [--vocab 50304] [--seq 1024] [--micro-batch 32] [--accum 16] [--steps 10]

Prints tokens/s (median over the timed steps, after 3 warm-up steps) and model FLOP/s under
C = 6N (N total parameters, the convention isoflop-train's metrics use).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402


def sdpa_attn(self, x, cos, sin):
    B, T, C = x.shape
    q, k, v = self.qkv(x).view(B, T, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)
    q, k = ref.rope(q, cos.to(q.dtype), sin.to(q.dtype)), ref.rope(k, cos.to(k.dtype), sin.to(k.dtype))
    if hasattr(F, "scaled_dot_product_attention"):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:  # PyTorch 1.13 (Debian's): explicit attention, for trying this script on a CPU
        att = (q @ k.transpose(-2, -1)) * (C // self.h) ** -0.5
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        y = torch.softmax(att.masked_fill(mask, float("-inf")), -1) @ v
    return self.proj(y.transpose(1, 2).reshape(B, T, C))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--accum", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    dev = torch.device(a.device)
    ref.Block.attn = sdpa_attn
    torch.manual_seed(0)
    model = ref.Transformer(a.layers, a.d_model, a.heads, a.vocab, a.seq).to(dev)
    n = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    step_tokens = a.micro_batch * a.seq * a.accum
    gen = torch.Generator(device=dev).manual_seed(1)
    times = []
    for step in range(a.steps + 3):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        for _ in range(a.accum):
            tokens = torch.randint(0, a.vocab, (a.micro_batch, a.seq + 1), device=dev,
                                   generator=gen)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(tokens[:, :a.seq])
            loss = F.cross_entropy(logits.reshape(-1, a.vocab).float(),
                                   tokens[:, 1:].reshape(-1), reduction="sum")
            (loss / step_tokens).backward()
            loss_sum += loss.detach().double()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_v = loss_sum.item() / step_tokens  # one sync per step (isoflop-train: logged steps)
        if step >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    tps = step_tokens / times[len(times) // 2]
    print(f"pytorch {torch.__version__} {a.device}: {a.layers}x{a.d_model} N {n:,} "
          f"tokens/s {tps:,.0f}  model TFLOP/s (6N) {6 * n * tps / 1e12:.1f}  last loss {loss_v:.3f}")
    if dev.type == "cuda":  # the figure isoflop-train's status.json reports as cuda_reserved
        print(f"pytorch memory: peak reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB, "
              f"peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
