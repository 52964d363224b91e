#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""sparda-compute's `dense` logits against an independent float64 forward pass written here with
numpy from Hugging Face's Llama definition (RMSNorm, rotate-half RoPE with plain theta or the
llama3 scaling, GQA with contiguous query groups, SwiGLU, untied head), on small checkpoints
written by `sparda gen-model` and on one whose weights this script rewrites with transformers'
initialisation (normal(0, 0.05), unit norms). Limits: relative L2 of each step's logits below
LIMIT and the greedy token equal at all but one step. Exits 77 without numpy.

usage: test_ref_forward.py BUILD_DIR
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("test_ref_forward: numpy is not installed, skipping")
    sys.exit(77)

LIMIT = 0.05


def st_read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] != "BF16":
            raise SystemExit(f"{path}: tensor {k} is {v['dtype']}, expected BF16")
        u = np.frombuffer(data[a:b], dtype=np.uint16).astype(np.uint32) << 16
        out[k] = u.view(np.float32).reshape(v["shape"]).astype(np.float64)
    return out


def st_write(path, tensors):
    hdr, blobs, off = {}, [], 0
    for k, t in tensors.items():
        u = t.astype(np.float32).view(np.uint32)
        b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
        hdr[k] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def inv_freq(cfg, hd):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (np.arange(0, hd, 2) / hd))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        fac, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wl = 2 * np.pi / inv
        il = np.where(wl > old / lo, inv / fac, inv)
        sm = (old / wl - lo) / (hi - lo)
        med = ~(wl < old / hi) & ~(wl > old / lo)
        inv = np.where(med, (1 - sm) * il / fac + sm * il, il)
    return inv


def forward(cfg, w, ids):
    hidden, nq, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, t = cfg.get("head_dim", hidden // nq), cfg["rms_norm_eps"], len(ids)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    fr = np.outer(np.arange(t, dtype=np.float64), inv_freq(cfg, hd))
    cos, sin = np.cos(np.concatenate([fr, fr], -1)), np.sin(np.concatenate([fr, fr], -1))

    def rope(x):
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    mask = np.triu(np.full((t, t), -np.inf), 1)
    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(t, nq, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd)
        o = np.zeros((t, nq, hd))
        for qh in range(nq):
            kh = qh // (nq // nkv)
            s = q[:, qh] @ k[:, kh].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, qh] = (s / s.sum(-1, keepdims=True)) @ v[:, kh]
        x = x + o.reshape(t, nq * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def case(build, work, name, gen_args, plain_rope, hf_init, prompt_len, new):
    mdir = os.path.join(work, name)
    subprocess.run([os.path.join(build, "bin", "sparda"), "gen-model", "--preset", "llama3-8b",
                    "--out", mdir] + gen_args, check=True, capture_output=True)
    cfg_path = os.path.join(mdir, "config.json")
    cfg = json.load(open(cfg_path))
    if plain_rope:
        cfg.pop("rope_scaling", None)
        cfg["rope_theta"] = 10000.0
        json.dump(cfg, open(cfg_path, "w"), indent=1)
    st = os.path.join(mdir, "model.safetensors")
    w = st_read(st)
    if hf_init:  # transformers' initialisation: normal(0, 0.05) weights, unit norm weights
        rng = np.random.default_rng(1)
        for k in w:
            w[k] = np.ones_like(w[k]) if "norm" in k else rng.normal(0, 0.05, w[k].shape)
        st_write(st, w)
        w = st_read(st)  # the bf16-rounded weights the runner reads
    prompt = np.random.default_rng(0).integers(0, cfg["vocab_size"], prompt_len).tolist()
    pfile, lfile, jfile = (os.path.join(work, f"{name}.{e}") for e in ("txt", "bin", "json"))
    open(pfile, "w").write(" ".join(map(str, prompt)) + "\n")
    r = subprocess.run([os.path.join(build, "bin", "sparda-compute"), f"--model={mdir}",
                        "--modes=dense", "--backend=cpu", "--host-store=inproc",
                        f"--prompt-file={pfile}", f"--new-tokens={new}", f"--logits-out={lfile}",
                        f"--json={jfile}"], capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr)
        return False
    toks = json.load(open(jfile))["dense"]["tokens"][0]
    ours = np.fromfile(lfile, dtype=np.float32).reshape(new, cfg["vocab_size"])
    ref = forward(cfg, w, prompt + toks[:-1])[prompt_len - 1:]
    rel = [float(np.linalg.norm(ours[s] - ref[s]) / np.linalg.norm(ref[s])) for s in range(new)]
    agree = sum(int(ours[s].argmax() == ref[s].argmax()) for s in range(new))
    ok = max(rel) < LIMIT and agree >= new - 1
    print(f"{name}: worst relative L2 {max(rel):.4f} (limit {LIMIT}), greedy agreement "
          f"{agree}/{new}: {'ok' if ok else 'FAIL'}")
    return ok


def main():
    build = sys.argv[1]
    geo = ["--layers", "2", "--hidden", "256", "--heads", "8", "--kv-heads", "2", "--head-dim",
           "32", "--ffn", "512", "--vocab", "512", "--max-pos", "4096"]
    with tempfile.TemporaryDirectory() as work:
        ok = case(build, work, "llama3-rope", geo, False, False, 100, 4)
        ok &= case(build, work, "plain-rope", geo, True, False, 100, 4)
        ok &= case(build, work, "hf-init", geo, True, True, 200, 4)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
