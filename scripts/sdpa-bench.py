#!/usr/bin/env python3
# PyTorch's fused scaled_dot_product_attention on the dense causal prefill problem that
# sparda-kbench times (32 query heads over 2 KV heads, head_dim 128, bf16), for the ratio in
# kernels/cuda/NOTES.md. Run on the same GPU in the same call as the kbench.
import torch
import torch.nn.functional as F

for t in (4096, 8192):
    q = torch.randn(1, 32, t, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 2, t, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 2, t, 128, device="cuda", dtype=torch.bfloat16)

    def f():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    f()
    f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(5):
        f()
    b.record()
    b.synchronize()
    ms = a.elapsed_time(b) / 5
    print(f"sdpa dense causal t={t} heads=32/2 d=128: {ms * 1e3:.1f} us "
          f"{4 * 32 * 128 * t * t / 2 / ms / 1e9:.1f} TF/s")
