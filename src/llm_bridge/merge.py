"""Stage `merged_model`: verl's FSDP checkpoint -> a Hugging Face model folder, checked by generating.

Runs `python -m verl.model_merger merge --backend fsdp` on the step that verl recorded as complete in
`latest_checkpointed_iteration.txt` (never a hard-coded global_step_N), into a temporary folder that becomes
the output only after transformers has loaded it and generated a few tokens.

    python -m llm_bridge.merge --result runs/tiny/sft/result.json --out-dir runs/tiny/merged_model
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def merge(checkpoint: Path, out_dir: Path) -> str:
    source = actor_dir(checkpoint)
    with atomic.atomic_path(out_dir, is_dir=True) as tmp:
        cmd = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
               "--local_dir", str(source), "--target_dir", str(tmp)]
        print(f"[merge] {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True, env=launch.child_env())
        sample = generation_check(tmp)
    return sample


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, type=Path, help="result.json of the sft or ppo stage")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    checkpoint = Path(json.loads(args.result.read_text())["checkpoint"])
    sample = merge(checkpoint, args.out_dir)
    print(f"[merge] {checkpoint} -> {args.out_dir}; generation check: {sample!r}")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
