#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The transformers peers of `sparda bench sweep`: load the synthetic checkpoint the sweep made
(`sparda gen-model`, Hugging Face layout) with transformers and generate N new tokens per
sequence at the sweep's contexts and batches, with the default dynamic cache (`hf-dynamic`) and
with the offloaded cache (`hf-offloaded`, cache_implementation="offloaded"), timing prefill and
decode separately (a streamer that synchronises the device at every token). Each configuration
is one child process running both modes; it writes OUT/<model>_c<ctx>_b<batch>_hf.json in the
shape of the sweep's records, so `sparda bench report` puts the peers next to the sweep's modes.

A mode that runs out of GPU memory is recorded as gpu-oom and not run at larger batches (nor is
one that ran out of time); a child killed by the kernel (host memory) is recorded as host-oom for
the mode it was running, and the other modes run again. Existing records are skipped
(resumable). A non-Llama config (MiniCPM's, whose modeling code is not part of transformers) is
loaded as a Llama model of the same geometry: the muP scales are left out, which changes the
numbers but not the work per token.

Needs python3 + torch + transformers only. --dry-run checks the arguments and the checkpoint's
config and prints the plan without importing torch or writing anything.

usage: hf-peers.py --model-dir DIR --model-name NAME --out DIR [--contexts 32768,...]
                   [--batches 1,4] [--new-tokens 18] [--modes hf-dynamic,hf-offloaded]
                   [--timeout-s 600] [--budget-s 0] [--dry-run]
"""
import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

MODES = ("hf-dynamic", "hf-offloaded")
NEEDED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "intermediate_size", "vocab_size")


def int_list(s):
    v = [int(x) for x in s.split(",") if x]
    if not v or any(x <= 0 for x in v):
        raise argparse.ArgumentTypeError(f"'{s}': want positive integers, comma separated")
    return v


def parse_args(argv):
    ap = argparse.ArgumentParser(description="transformers peers of the sweep")
    ap.add_argument("--model-dir", required=True, help="checkpoint (config.json + safetensors)")
    ap.add_argument("--model-name", required=True,
                    help="the sweep's model spec (preset or preset:layers), e.g. llama3-8b:32")
    ap.add_argument("--out", required=True, help="the sweep's output directory")
    ap.add_argument("--contexts", type=int_list, default=[32768, 65536, 98304, 131072])
    ap.add_argument("--batches", type=int_list, default=[1, 4])
    ap.add_argument("--new-tokens", type=int, default=18)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--budget-s", type=float, default=0,
                    help="start no configuration that could end after this many seconds")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child: CONTEXT,BATCH,PARTIAL_JSON
    a = ap.parse_args(argv)
    a.modes = [m for m in a.modes.split(",") if m]
    bad = [m for m in a.modes if m not in MODES]
    if bad or not a.modes:
        ap.error(f"--modes: unknown {bad or 'empty list'} (known: {', '.join(MODES)})")
    if a.new_tokens < 2:
        ap.error("--new-tokens must be >= 2 (prefill makes the first token)")
    if a.batches != sorted(set(a.batches)):
        ap.error("--batches must ascend (the feasible-batch search relies on it)")
    return a


def stem_of(name):
    """The sweep's file stem of a model spec: preset, or preset:layers -> preset-l<layers>."""
    if ":" in name:
        preset, layers = name.split(":", 1)
        if not preset or not layers.isdigit() or int(layers) <= 0:
            raise ValueError(f"model name '{name}': want preset or preset:layers")
        return f"{preset}-l{int(layers)}"
    if not name or "/" in name:
        raise ValueError(f"model name '{name}': want preset or preset:layers")
    return name


def check_model(d):
    """The checkpoint's config (dict); raises ValueError naming what is wrong."""
    path = os.path.join(d, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    missing = [k for k in NEEDED if not isinstance(cfg.get(k), int) or cfg[k] <= 0]
    if missing:
        raise ValueError(f"{path}: missing or bad {', '.join(missing)}")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        raise ValueError(f"{path}: attention heads not a multiple of KV heads")
    if not any(os.path.exists(os.path.join(d, f))
               for f in ("model.safetensors", "model.safetensors.index.json")):
        raise ValueError(f"{d}: no model.safetensors or model.safetensors.index.json")
    return cfg


def record_path(a, ctx, batch):
    return os.path.join(a.out, f"{stem_of(a.model_name)}_c{ctx}_b{batch}_hf.json")


# ---- child: one configuration, every mode, in this process ----------------------------------

def load_model(a, cfg, ctx):
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    keep = {k: cfg[k] for k in NEEDED + ("rms_norm_eps", "rope_theta", "rope_scaling",
                                          "head_dim", "tie_word_embeddings",
                                          "max_position_embeddings") if k in cfg}
    if cfg.get("model_type") != "llama":
        keep.pop("rope_scaling", None)  # e.g. MiniCPM's longrope: same work, plain RoPE
    keep["max_position_embeddings"] = max(keep.get("max_position_embeddings", 0),
                                          ctx + a.new_tokens + 64)
    lc = LlamaConfig(**keep)
    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype" if major >= 5 else "torch_dtype": torch.bfloat16}  # renamed in 5.0
    model = LlamaForCausalLM.from_pretrained(a.model_dir, config=lc, attn_implementation="sdpa",
                                             **kw)
    return model.to(device="cuda", dtype=torch.bfloat16).eval(), lc


class Clock:
    """A generate() streamer: the time of the prompt and of every new token, device synced."""

    def __init__(self, torch):
        self.torch, self.t = torch, []

    def put(self, value):
        self.torch.cuda.synchronize()
        self.t.append(time.perf_counter())

    def end(self):
        pass


def generate(torch, model, ids, new, cache):
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
              eos_token_id=None)
    if cache:
        kw["cache_implementation"] = cache
    clock = Clock(torch)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock,
                             **kw)
    return out[:, ids.shape[1]:], clock.t


def run_mode(a, torch, model, lc, ctx, batch, mode):
    cache = "offloaded" if mode == "hf-offloaded" else None
    g = torch.Generator().manual_seed(1)
    warm = torch.randint(0, lc.vocab_size, (batch, 64), generator=g).to("cuda")
    generate(torch, model, warm, 2, cache)  # first-call costs out of the timing
    ids = torch.randint(0, lc.vocab_size, (batch, ctx), generator=g).to("cuda")
    torch.cuda.reset_peak_memory_stats()
    toks, t = generate(torch, model, ids, a.new_tokens, cache)
    steps = len(t) - 2  # t[0]: prompt in, t[1]: first token (prefill), then one per step
    decode_s = t[-1] - t[1]
    each = sorted((t[i + 1] - t[i]) * 1e3 for i in range(1, len(t) - 1))
    import transformers
    return {
        "ran": mode, "backend": "cuda", "batch": batch, "prompt_tokens": batch * ctx,
        "decode_tokens": batch * steps,
        "decode_tokens_per_s": batch * steps / decode_s if decode_s > 0 else 0.0,
        "decode_step_ms": decode_s * 1e3 / steps if steps > 0 else 0.0,
        # the spread of the steps: one slow step (a first-shape cost) moves the mean, not these
        "decode_step_ms_median": each[len(each) // 2] if each else 0.0,
        "decode_step_ms_min": each[0] if each else 0.0,
        "decode_step_ms_max": each[-1] if each else 0.0,
        "prefill_s": t[1] - t[0],
        "gpu_mem_peak_bytes": torch.cuda.max_memory_allocated(),
        "host_rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cache_implementation": cache or "dynamic",
        "transformers": transformers.__version__, "torch": torch.__version__,
        "tokens": toks.tolist(),
    }


def child(a):
    import torch

    ctx, batch, partial = a.one.split(",", 2)
    ctx, batch = int(ctx), int(batch)
    cfg = check_model(a.model_dir)
    res = {}

    def save():
        with open(partial + ".tmp", "w") as f:
            json.dump(res, f)
        os.replace(partial + ".tmp", partial)

    model, lc = load_model(a, cfg, ctx)
    for mode in a.modes:
        res[mode] = {"status": "running"}
        save()
        try:
            res[mode] = {"status": "ok", "result": run_mode(a, torch, model, lc, ctx, batch,
                                                             mode)}
        except torch.cuda.OutOfMemoryError as e:
            res[mode] = {"status": "gpu-oom", "error": str(e).splitlines()[0]}
        except MemoryError as e:
            res[mode] = {"status": "host-oom", "error": f"MemoryError: {e}"}
        torch.cuda.empty_cache()
        save()
    return 0


# ---- parent: the grid, one child per configuration ------------------------------------------

def status_of(rec, mode):
    return rec.get("modes", {}).get(mode, {}).get("status", "") if rec else ""


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_config(a, ctx, batch, modes, skips, deadline):
    """Run modes in children until each has a status; returns the record."""
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    stem = os.path.basename(record_path(a, ctx, batch))[:-5]
    entries, runs, todo, k = {}, [], list(modes), 0
    while todo:
        left = deadline - time.monotonic()
        if left <= 1:
            for m in todo:
                entries[m] = {"status": "timeout", "run": None,
                              "error": "no time left in the configuration's limit"}
            break
        partial = os.path.join(a.out, "logs", f"{stem}.r{k}.partial.json")
        log = os.path.join(a.out, "logs", f"{stem}.r{k}.log")
        if os.path.exists(partial):
            os.unlink(partial)
        cmd = [sys.executable, os.path.abspath(__file__), "--model-dir", a.model_dir,
               "--model-name", a.model_name, "--out", a.out, "--new-tokens", str(a.new_tokens),
               "--modes", ",".join(todo), "--one", f"{ctx},{batch},{partial}"]
        t0, timed_out = time.monotonic(), False
        with open(log, "w") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            try:
                rc = p.wait(timeout=left)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc, timed_out = p.wait(), True
        res = load_json(partial) or {}
        err = ""
        with open(log, errors="replace") as lf:
            lines = [l.strip() for l in lf if l.strip()]
            err = lines[-1] if lines else ""
        runs.append({"run": k, "modes": list(todo), "exit_status": rc,
                     "wall_s": time.monotonic() - t0, "error": err or None})
        rest = []
        for m in todo:
            e = res.get(m)
            if e and e["status"] != "running":
                entries[m] = dict(e, run=k, error=e.get("error"))
            elif e or not res or timed_out:  # the mode it died in (or before any mode ran)
                st = "timeout" if timed_out else (
                    "host-oom" if rc == -signal.SIGKILL else "error")
                why = (f"killed after the {a.timeout_s:.0f} s timeout" if timed_out else
                       "killed by SIGKILL (the kernel's OOM killer)" if st == "host-oom" else
                       err)
                entries[m] = {"status": st, "run": k, "error": why}
            else:
                rest.append(m)
        todo, k = rest, k + 1
    for m, why in skips.items():
        entries[m] = {"status": "skipped", "run": None, "error": why}
    for e in entries.values():
        e.setdefault("result", None)
    preset, _, layers = a.model_name.partition(":")
    return {"kind": "sweep-config", "model": a.model_name, "preset": preset,
            "layers": int(layers) if layers else None, "context": ctx, "batch": batch,
            "new_tokens": a.new_tokens, "backend": "cuda", "store": "hf",
            "modes_asked": list(modes) + list(skips), "runs": runs, "modes": entries}


def plan(a, ctx, bi):
    """Modes to run at batch index bi, and those skipped after an OOM (or a timeout) at a smaller
    batch."""
    run, skips = [], {}
    for m in a.modes:
        for b in a.batches[:bi]:
            st = status_of(load_json(record_path(a, ctx, b)), m)
            if st in ("gpu-oom", "host-oom", "timeout"):
                skips[m] = f"{st} at batch {b}"
                break
        else:
            run.append(m)
    return run, skips


def main(argv):
    a = parse_args(argv)
    try:
        stem_of(a.model_name)
        cfg = check_model(a.model_dir)
    except ValueError as e:
        print(f"hf-peers: {e}", file=sys.stderr)
        return 2
    if a.one:
        return child(a)
    arch = cfg.get("model_type", "?")
    print(f"hf-peers: {a.model_dir} ({arch}{', loaded as llama' if arch != 'llama' else ''}, "
          f"{cfg['num_hidden_layers']} layers), modes {','.join(a.modes)}, "
          f"{len(a.contexts)} contexts x {len(a.batches)} batches, out {a.out}")
    if not a.dry_run:
        os.makedirs(a.out, exist_ok=True)
    t0, left, ran = time.monotonic(), 0, 0
    for ctx in a.contexts:
        for bi, batch in enumerate(a.batches):
            path = record_path(a, ctx, batch)
            if os.path.exists(path):
                print(f"{os.path.basename(path)}: exists, skipped")
                continue
            modes, skips = plan(a, ctx, bi)
            if a.dry_run:
                print(f"{os.path.basename(path)}: would run {','.join(modes) or 'nothing'}"
                      + (f" (skipped: {skips})" if skips else ""))
                continue
            if modes and a.budget_s and time.monotonic() - t0 + a.timeout_s > a.budget_s:
                left += 1
                continue
            rec = run_config(a, ctx, batch, modes, skips, time.monotonic() + a.timeout_s)
            with open(path + ".tmp", "w") as f:
                json.dump(rec, f, indent=1)
            os.replace(path + ".tmp", path)
            ran += 1
            print(f"{os.path.basename(path)}: " + ", ".join(
                f"{m} {e['status']}" for m, e in rec["modes"].items()), flush=True)
    print(f"hf-peers: {ran} configurations ran, {left} left")
    return 3 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
