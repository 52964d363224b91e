#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Three-way check on a checkpoint written by Hugging Face transformers: our dense logits, the
float64 numpy forward of the textbook Llama definition (tests/integration/test_ref_forward.py)
reading the same files, and transformers' own float32 forward. Prints the worst relative L2 of
each pair over the generated steps; tells which side of an ours-vs-transformers difference departs
from the definition. Needs torch, transformers and numpy (the GPU host has them).

usage: hf-refcheck.py SPARDA_COMPUTE WORK_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import test_ref_forward as ref  # noqa: E402


def main():
    compute, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    mdir = os.path.join(work, "m")
    cfg = LlamaConfig(vocab_size=1024, hidden_size=512, intermediate_size=1024,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                      max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, initializer_range=0.05)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.save_pretrained(mdir, safe_serialization=True)
    t, new = 300, 6
    prompt = torch.randint(0, cfg.vocab_size, (t,)).tolist()
    with open(os.path.join(work, "p.txt"), "w") as f:
        f.write(" ".join(map(str, prompt)) + "\n")
    r = subprocess.run([compute, f"--model={mdir}", "--modes=dense", "--backend=cpu",
                        "--host-store=inproc", f"--prompt-file={work}/p.txt",
                        f"--new-tokens={new}", f"--logits-out={work}/l.bin",
                        f"--json={work}/o.json"], capture_output=True, text=True)
    if r.returncode:
        print(r.stderr)
        return 1
    toks = json.load(open(f"{work}/o.json"))["dense"]["tokens"][0]
    ours = np.fromfile(f"{work}/l.bin", dtype=np.float32).reshape(new, cfg.vocab_size)
    seq = prompt + toks[:-1]
    hcfg = json.load(open(os.path.join(mdir, "config.json")))
    if "rope_theta" not in hcfg and "rope_parameters" in hcfg:
        hcfg["rope_theta"] = hcfg["rope_parameters"].get("rope_theta", 10000.0)
    w = ref.st_read(os.path.join(mdir, "model.safetensors"))
    want = ref.forward(hcfg, w, seq)[t - 1:]
    with torch.no_grad():
        hf = model.float()(torch.tensor([seq])).logits[0, t - 1:].numpy()

    def rel(a, b):
        return max(np.linalg.norm(a[s] - b[s]) / np.linalg.norm(b[s]) for s in range(new))

    print(f"ours vs numpy {rel(ours, want):.4f}  transformers fp32 vs numpy {rel(hf, want):.4f}  "
          f"ours vs transformers fp32 {rel(ours, hf):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
