"""Stage `merged_model`: verl's FSDP checkpoint -> a Hugging Face model folder, checked by generating.

Runs `python -m verl.model_merger merge --backend fsdp` on the step that verl recorded as complete in
`latest_checkpointed_iteration.txt` (never a hard-coded global_step_N), into a temporary folder that becomes
the output only after transformers has loaded it and generated a few tokens.

    python -m llm_bridge.merge --result runs/tiny/sft/result.json --out-dir runs/tiny/merged_model
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llm_bridge import atomic, launch


def actor_dir(checkpoint: Path) -> Path:
    """SFT checkpoints hold the model directly; PPO checkpoints hold it under actor/."""
    return checkpoint / "actor" if (checkpoint / "actor").is_dir() else checkpoint


def generation_check(model_dir: Path, prompt: str = "Ava has 3 apples.") -> str:
    """Load the merged folder the way a user would and generate; raises if anything is broken."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    if out.shape[1] <= inputs["input_ids"].shape[1]:
        raise RuntimeError(f"{model_dir}: merged model generated no tokens")
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:])


# attn_implementation values any transformers install can load; anything else was a training-time kernel
STANDARD_ATTENTION = {None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"}


def portable_source(source: Path, scratch: Path) -> Path:
    """verl saves the model config as trained, including a training-only attention kernel (the GPU presets'
    "varlen", registered by llm_bridge.gpu_support). The merger, and every user of the merged model, would fail
    to instantiate it: merge from a shadow folder (links to the shards, a config without that key) instead."""
    config_path = source / "huggingface" / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("attn_implementation") in STANDARD_ATTENTION:
        return source
    shadow = scratch / "source"
    shadow.mkdir()
    for item in source.iterdir():
        if item.name != "huggingface":
            (shadow / item.name).symlink_to(item.resolve())
    shutil.copytree(source / "huggingface", shadow / "huggingface")
    config.pop("attn_implementation")
    (shadow / "huggingface" / "config.json").write_text(json.dumps(config, indent=2))
    return shadow


def merge(checkpoint: Path, out_dir: Path, log: Path | None = None) -> str:
    """Merge `checkpoint` into the HF folder `out_dir`; verl's merger writes its output to `log` when given (the
    terminal gets one line), else to the terminal."""
    with atomic.atomic_path(out_dir, is_dir=True) as tmp, tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".scratch.partial") as scratch:
        source = portable_source(actor_dir(checkpoint), Path(scratch))
        cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
               "--local_dir", str(source), "--target_dir", str(tmp)]
        if log is None:
            print(f"[merge] {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, env=launch.child_env())
        else:  # an hour without output from the merger means it hangs
            launch.run(cmd, launch.child_env(), log, 3600, "verl model_merger")
        sample = generation_check(tmp)
    return sample


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, type=Path, help="result.json of the sft or ppo stage")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--log", type=Path, help="the stage log: this stage's lines and verl's merger output")
    args = parser.parse_args(argv)
    if args.log:
        from llm_bridge import console

        console.tee_stdout(args.log)
    checkpoint = Path(json.loads(args.result.read_text())["checkpoint"])
    sample = merge(checkpoint, args.out_dir, args.log)
    print(f"[merge] {checkpoint} -> {args.out_dir}; generation check: {sample!r}")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
