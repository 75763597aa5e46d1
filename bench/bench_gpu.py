"""SFT throughput on one GPU kind, side by side in one run: the plain-PyTorch ceiling against verl's SFT with the
seed's settings and with the tuned preset. Prints a markdown table (docs/benchmarks.md records it).

    PYTHONPATH=src python bench/bench_gpu.py --model-dir M --data-dir D --out OUT [--rows a,b,...] [--nproc N]

Rows: ceiling-eager, ceiling-compile (a minimal loop: bf16 weights, fused AdamW, SDPA; 16 x 1024 random
tokens), seed (preset h100x8's SFT settings: micro batch 8 sequences, padded), tuned (preset h200x1), micro
(the two suspects in isolation), and the `tuned-*` variants in VARIANTS. verl rows go through
llm_bridge.sft.verl_overrides, the same function the `sft` stage uses, so a row is exactly a preset's run.

MFU = tokens/s x (6 N + 12 L d s) / (989e12 x GPUs): N all parameters (the tied embedding counted once, as the
lm_head matmul), L layers, d hidden size, s the token-weighted mean sequence length (sum s_i^2 / sum s_i) for
the attention matmuls (PaLM's convention, no causal halving), 989 TFLOP/s the H100/H200 SXM dense bf16 peak.
Only real tokens count: padding a row does is work, not throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
PEAK_FLOPS = 989e12
BENCH = ["trainer.logger=[console]", "trainer.save_freq=-1", "trainer.resume_mode=disable", "data.val_files=null"]
# Variants of the tuned preset, each measured against it: name -> (overrides replacing or adding, extra env).
VARIANTS = {
    "seed-fused": ("h100x8", ["model.use_remove_padding=False", "model.use_fused_kernels=True",
                              "model.fused_kernel_options.impl_backend=torch"], {}),
    # the tuned preset with verl's own knob for the log-probs instead of llm_bridge's (LLM_BRIDGE_FAST_LOGPROBS)
    "tuned-fused": ("h200x1", ["model.use_fused_kernels=True", "model.fused_kernel_options.impl_backend=torch"],
                    {"LLM_BRIDGE_FAST_LOGPROBS": "0"}),
    "tuned-fused-triton": ("h200x1", ["model.use_fused_kernels=True", "model.fused_kernel_options.impl_backend=triton"],
                           {"LLM_BRIDGE_FAST_LOGPROBS": "0"}),
    # the log-probs as the preset had them before 2026-12-08, when SFT's 1.17x the plain loop was measured: one
    # cross-entropy on fp32 copies of the logits instead of the preset's Triton kernels (llm_bridge.logprob_kernel)
    "tuned-vectorised-logprobs": ("h200x1", [], {"LLM_BRIDGE_FAST_LOGPROBS": "1"}),
    "tuned-sdpa": ("h200x1", ["+model.override_config.attn_implementation=sdpa"], {}),
    "tuned-noliger": ("h200x1", ["model.use_liger=False"], {}),
    "tuned-8k": ("h200x1", ["data.max_token_len_per_gpu=8192"], {}),
    "tuned-16k": ("h200x1", ["data.max_token_len_per_gpu=16384"], {}),
    "tuned-64k": ("h200x1", ["data.max_token_len_per_gpu=65536"], {}),
    "tuned-bf16": ("h200x1", ["engine.model_dtype=bf16"], {}),
    "tuned-fsdp2": ("h200x1", ["engine.strategy=fsdp2"], {}),
    "tuned-ckpt": ("h200x1", ["model.enable_gradient_checkpointing=True"], {}),
}
ROWS = {"seed": ("h100x8", ["model.use_remove_padding=False"], {}), "tuned": ("h200x1", [], {}), **VARIANTS}


def key_of(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def merge(base: list[str], extra: list[str]) -> list[str]:
    """Overrides with `extra` replacing items of the same key (hydra refuses to `+`-add a key twice)."""
    keys = {key_of(o) for o in extra}
    return [o for o in base if key_of(o) not in keys] + extra


def verl_row(name: str, args, shape: dict) -> tuple[list[str], dict, list[str], float | None]:
    from llm_bridge import fit, launch, sft

    preset_name, extra, extra_env = ROWS[name]
    preset = yaml.safe_load((REPO / "config" / "presets" / f"{preset_name}.yaml").read_text())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = fit.stage_settings(config, preset, "sft")
    cluster = {"nnodes": 1, "gpus_per_node": args.nproc, "procs_per_node": args.nproc}
    steps = args.seed_steps if name.startswith("seed") else args.steps
    bench = BENCH + [f"trainer.total_training_steps={steps}",
                     f"data.train_max_samples={settings['train_batch_size'] * (steps + 1)}"]
    overrides = merge(sft.verl_overrides(settings, args.model_dir, args.data_dir, args.out / "ckpt" / name, cluster, 0),
                      bench + extra)
    env = {**{k: str(v) for k, v in preset.get("env", {}).items()}, **extra_env}
    fit_config = {**config, "model": {"source": "local", "local": str(args.model_dir)}}
    est = fit.estimate_gib(fit_config, {**preset, **cluster, "sft": {**settings, "overrides": overrides}})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           str(REPO / "bench" / "gpu_workers.py"), "verl", "--overrides", json.dumps(overrides),
           "--profile-step", str(args.profile_step if name == "tuned" else 0), "--out", str(args.out)]
    return cmd, env, overrides, est


def run_row(name: str, args, shape: dict, deadline: float) -> dict:
    worker = [sys.executable, str(REPO / "bench" / "gpu_workers.py")]
    env, est, overrides = {}, None, None
    if name.startswith("ceiling"):
        cmd = worker + ["ceiling", "--model-dir", str(args.model_dir), "--steps", "10"] + (["--compile"] if "compile" in name else [])
    elif name == "micro":
        cmd = worker + ["micro", "--model-dir", str(args.model_dir), "--lengths", str(args.data_dir / "lengths.json")]
    else:
        cmd, env, overrides, est = verl_row(name, args, shape)
    budget = deadline - time.monotonic()
    if budget < 45:
        return {"row": name, "error": "skipped: out of time"}
    full_env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}", **env}
    log = args.out / f"{name}.log"
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=min(budget, args.row_timeout))
        text, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        text, code = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), "timeout"
    log.write_text(f"$ {' '.join(cmd)}\nenv {env}\n{text}")
    found = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
    row = {"row": name, "wall_s": round(time.monotonic() - start, 1), "env": env, "overrides": overrides, "fit_est_gib": est}
    if not found:
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        return {**row, "error": f"exit {code}: {' | '.join(tail)[-400:]}"}
    return {**row, **found[-1]}


def critic_params(shape: dict) -> int:
    """What a critic multiplies by: its decoder layers and a one-output value head, no vocabulary projection."""
    from llm_bridge.fit import param_count

    return shape["num_hidden_layers"] * param_count(shape)[1] + shape["hidden_size"]


def mfu(row: dict, shape: dict, nproc: int, params: int | None = None) -> float | None:
    """`params`: what the model multiplies by, where not all of the shape's (a critic: no vocabulary projection)."""
    from llm_bridge.fit import param_count

    if "tokens" not in row:
        return None
    n = params or param_count(shape)[0]
    per_token = 6 * n + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * row["sq_tokens"] / row["tokens"]
    return row["tokens"] / row["step_s"] * per_token / (PEAK_FLOPS * nproc)


def model_shape(model_dir: Path) -> dict:
    from llm_bridge.fit import SHAPE_KEYS

    return {k: v for k, v in json.loads((model_dir / "config.json").read_text()).items() if k in SHAPE_KEYS}


def run_rows(names: list[str], run_one, out: Path, hidden: tuple[str, ...] = ("overrides", "env"),
             earlier: list[dict] | None = None) -> list[dict]:
    """Run the rows in order, printing each and keeping results.json current (a run cut short keeps its rows).
    `earlier`: rows of a previous run into the same folder, kept unless a row of the same name is run again."""
    rows = [r for r in earlier or [] if r["row"] not in names]
    for name in names:
        rows.append(run_one(name))
        shown = {k: v for k, v in rows[-1].items() if k not in hidden}
        print(f"[bench] {json.dumps(shown)}", flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict], shape: dict, nproc: int) -> str:
    eager = next((r for r in rows if r["row"] == "ceiling-eager" and "tokens" in r), None)
    seed = next((r for r in rows if r["row"] == "seed" and "tokens" in r), None)
    lines = ["| row | tokens/s | s/step | tokens/step | MFU | peak alloc GiB | fit est. GiB | vs eager ceiling | vs seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "tokens" not in r:
            lines.append(f"| {r['row']} | {r.get('error', '-')} |  |  |  |  |  |  |  |")
            continue
        tps = r["tokens"] / r["step_s"]
        rel = lambda other: f"{tps / (other['tokens'] / other['step_s']):.2f}x" if other else "-"  # noqa: E731
        est = f"{r['fit_est_gib']:.0f}" if r.get("fit_est_gib") else "-"
        lines.append(f"| {r['row']} | {tps:,.0f} | {r['step_s']:.3f} | {r['tokens']:,.0f} | {mfu(r, shape, nproc):.1%} | "
                     f"{r['peak_gib']:.1f} | {est} | {rel(eager)} | {rel(seed)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="HF folder (config + tokenizer + weights)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the parquet stage's folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default="ceiling-eager,ceiling-compile,seed,tuned")
    parser.add_argument("--nproc", type=int, default=1, help="GPUs (torchrun ranks) for the verl rows")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed-steps", type=int, default=5)
    parser.add_argument("--profile-step", type=int, default=0, help="profile this step of the tuned row")
    parser.add_argument("--row-timeout", type=float, default=240)
    parser.add_argument("--deadline", type=float, default=540, help="seconds for all rows; later rows are skipped")
    args = parser.parse_args()
    args.model_dir, args.data_dir = args.model_dir.resolve(), args.data_dir.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    shape = model_shape(args.model_dir)
    deadline = time.monotonic() + args.deadline
    rows = run_rows(args.rows.split(","), lambda name: run_row(name, args, shape, deadline), args.out)
    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, GPU {torch.cuda.get_device_name(0)}"
    text = table([r for r in rows if r["row"] != "micro"], shape, args.nproc)
    (args.out / "table.md").write_text(f"{time.strftime('%Y-%m-%d')}, {versions}\n\n{text}\n")
    print(f"\n{versions}\n{text}")


if __name__ == "__main__":
    main()
