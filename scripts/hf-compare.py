#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Check the model loader against an independent producer: save a small random Llama model with
Hugging Face transformers (safetensors, bf16), generate with sparda-compute in `dense` mode, and
compare its logits at every generated position with transformers' float32 forward of the same
bf16 weights. The tolerance is bf16's own: transformers' bf16 forward against its float32 forward
gives the yardstick, and ours must stay within 1.5x of it (or 3%), with the same greedy tokens.
Exits non-zero on a mismatch.

usage: hf-compare.py --compute PATH/sparda-compute --work DIR [--backend cuda|cpu]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compute", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--prompt", type=int, default=300)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--attn-gain", type=float, default=1.0,
                    help="scale q/k/v projections so attention is peaked and matters to logits "
                         "(random small weights give near-uniform attention that hides errors)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    mdir = os.path.join(a.work, f"hf-llama-g{a.attn_gain:g}")
    cfg = LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                      max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, initializer_range=0.05)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.weight.mul_(a.attn_gain)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(mdir, safe_serialization=True)
    prompt = torch.randint(0, cfg.vocab_size, (a.prompt,)).tolist()
    pfile = os.path.join(a.work, "prompt.txt")
    with open(pfile, "w") as f:
        f.write(" ".join(map(str, prompt)) + "\n")
    lfile, jfile = os.path.join(a.work, "logits.bin"), os.path.join(a.work, "out.json")
    cmd = [a.compute, f"--model={mdir}", "--modes=dense", f"--backend={a.backend}",
           f"--prompt-file={pfile}", f"--new-tokens={a.new}", f"--logits-out={lfile}",
           f"--json={jfile}", "--host-store=inproc"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr, file=sys.stderr)
        return 1
    toks = json.load(open(jfile))["dense"]["tokens"][0]
    ours = np.fromfile(lfile, dtype=np.float32).reshape(a.new, cfg.vocab_size)
    seq = torch.tensor([prompt + toks[:-1]])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        ref16 = model.to(dev)(seq.to(dev)).logits[0, a.prompt - 1:].float().cpu().numpy()
        ref = model.float()(seq.to(dev)).logits[0, a.prompt - 1:].cpu().numpy()
    worst, worst16, agree = 0.0, 0.0, 0
    for s in range(a.new):
        norm = np.linalg.norm(ref[s])
        rel = float(np.linalg.norm(ours[s] - ref[s]) / norm)
        rel16 = float(np.linalg.norm(ref16[s] - ref[s]) / norm)
        worst, worst16 = max(worst, rel), max(worst16, rel16)
        agree += int(np.argmax(ours[s]) == np.argmax(ref[s]))
        print(f"step {s}: relative L2 ours {rel:.4f} transformers-bf16 {rel16:.4f} "
              f"argmax ours {np.argmax(ours[s])} transformers {np.argmax(ref[s])}")
    limit = max(0.03, 1.5 * worst16)
    print(f"hf-compare: worst relative L2 ours {worst:.4f}, transformers bf16 {worst16:.4f} "
          f"(limit {limit:.4f}); argmax agreement {agree}/{a.new}")
    return 0 if worst <= limit and agree >= a.new - 1 else 1


if __name__ == "__main__":
    sys.exit(main())
