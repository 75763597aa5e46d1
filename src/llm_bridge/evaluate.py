"""Stage `evaluate`: GSM8K exact-match accuracy of each model on the test split (greedy decoding).

Scored with verl's own GSM8K rule (`verl.utils.reward_score.gsm8k`, strict: the number after '####'), the
same function that gives the PPO reward, so "accuracy" here and "reward" there mean the same thing.

    python -m llm_bridge.evaluate --params '<json>' --test runs/tiny/parquet/test.parquet \
        --model base=runs/tiny/base_model --model sft=runs/tiny/merged_model --out runs/tiny/evaluate/eval.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq

from llm_bridge import atomic


def score(response: str, ground_truth: str) -> float:
    from verl.utils.reward_score.gsm8k import compute_score

    return float(compute_score(response, ground_truth, method="strict", format_score=0.0, score=1.0))


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of an accuracy from n problems (Wilson score: sound at 0 % and for small n)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre, half = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def evaluate_model(model_dir: Path, rows: list[dict], max_new_tokens: int, batch_size: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # On a GPU node (the SLURM evaluate job asks for one) generate there in bf16; on CPU in fp32, as trained.
    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype).to(device).eval()
    correct, samples, start = 0.0, [], time.monotonic()
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in batch]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        responses = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, response in zip(batch, responses):
            hit = score(response, row["reward_model"]["ground_truth"])
            correct += hit
            if len(samples) < 3:
                samples.append({"question": row["extra_info"]["question"], "response": response, "correct": bool(hit)})
        print(f"[evaluate] {model_dir.name}: {min(i + batch_size, len(rows))}/{len(rows)}", flush=True)
    return {"accuracy": correct / len(rows), "n": len(rows), "ci95": [round(b, 4) for b in wilson_interval(correct, len(rows))], "model": str(model_dir), "seconds": round(time.monotonic() - start, 1), "samples": samples}


def markdown_table(results: dict) -> str:
    lines = ["| model | GSM8K accuracy (exact match) | 95 % interval | n |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['accuracy']:.1%} | {r['ci95'][0]:.1%} - {r['ci95'][1]:.1%} | {r['n']} |" for name, r in results["models"].items()]
    if results.get("note"):
        lines.append(f"\n{results['note']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {n_samples, max_new_tokens, batch_size, note}")
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR, in table order")
    parser.add_argument("--out", required=True, type=Path, help="eval.json; eval.md is written beside it")
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    rows = pq.read_table(args.test).slice(0, params["n_samples"]).to_pylist()
    results = {"metric": "gsm8k_strict_exact_match", "models": {}, "note": params.get("note", "")}
    for spec in args.model:
        name, path = spec.split("=", 1)
        results["models"][name] = evaluate_model(Path(path), rows, params["max_new_tokens"], params["batch_size"])
        print(f"[evaluate] {name}: accuracy {results['models'][name]['accuracy']:.1%}", flush=True)
    atomic.write_text(args.out.with_suffix(".md"), markdown_table(results))
    atomic.write_json(args.out, results, sort_keys=False)  # keep the table's row order
    print(f"[evaluate] table: {args.out.with_suffix('.md')} (shown again at the end of the run)")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
