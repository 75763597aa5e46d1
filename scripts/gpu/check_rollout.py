"""The PPO rollout without verl, on the GPU machine: how fast vLLM alone generates the benchmark's rollout, and
whether its log-probs agree with the training side's (Hugging Face) for the same tokens.

    python scripts/gpu/check_rollout.py --model M --prompts D/train.parquet --out OUT/check_rollout.json

1. Time: vLLM's offline engine (bf16, CUDA graphs, the h200x1 preset's memory share and prefill budget) generates
   256 prompts x 256 tokens (ignore_eos: every row the full length) with and without per-token log-probs. PPO's
   `timing_s/gen` minus this is what verl's agent loop, HTTP server and sleep/wake add.
2. Agreement: the log-prob vLLM reports for each sampled token against Hugging Face's on the same sequences, over
   the whole vocabulary and over the tokenizer's ids only. On 2026-12-02 (H200, bf16) the offline engine agreed
   with Hugging Face over the whole vocabulary (0.0006 nats a token) and sampled ids beyond the tokenizer's; inside
   PPO, verl's rollout_corr/kl read ln(vocabulary rows / tokenizer ids) (docs/benchmarks.md), which is why the
   benchmark's tokenizer now fills every row.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def prompts_from(parquet: Path, tokenizer, n: int) -> list[list[int]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(parquet, columns=["prompt"]).to_pylist()[:n]
    return [tokenizer.apply_chat_template(list(r["prompt"]), add_generation_prompt=True, tokenize=True, return_dict=False)
            for r in rows]


def generate(llm, prompts, max_tokens: int, logprobs: int | None, seed: int | None = 0, **fields):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=1.0, max_tokens=max_tokens, ignore_eos=True, logprobs=logprobs, seed=seed,
                            **fields)
    start = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return outs, time.perf_counter() - start


def hf_logprobs(model_dir: Path, prompts, outs, n: int, vocab_used: int) -> dict:
    """Mean over sampled tokens of vLLM's log-prob minus HF's (bf16, SDPA, one sequence at a time)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a check of this script on a tiny model
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    diffs_full, diffs_tok, beyond = [], [], 0
    for prompt, out in list(zip(prompts, outs))[:n]:
        sample = out.outputs[0]
        ids = torch.tensor([prompt + list(sample.token_ids)], device=device)
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1].float()
        target = torch.tensor(sample.token_ids, device=device)
        full = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
        tok = torch.log_softmax(logits[:, :vocab_used], -1).gather(1, target.clamp(max=vocab_used - 1)[:, None])[:, 0]
        vllm = torch.tensor([lp[t].logprob for lp, t in zip(sample.logprobs, sample.token_ids)], device=device)
        diffs_full.append((vllm - full).mean().item())
        diffs_tok.append((vllm - tok).mean().item())
        beyond += int((target >= vocab_used).sum())
    mean = lambda xs: sum(xs) / len(xs)
    return {"sequences": len(diffs_full), "vllm_minus_hf_full_vocab": mean(diffs_full),
            "vllm_minus_hf_tokenizer_vocab": mean(diffs_tok), "sampled_ids_beyond_tokenizer": beyond}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True, help="the ppo data's train.parquet")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16", help="float32 with eager mode: vLLM on CPU")
    args = parser.parse_args()
    from transformers import AutoTokenizer
    from vllm import LLM

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    prompts = prompts_from(args.prompts, tokenizer, args.n)
    start = time.perf_counter()
    llm = LLM(model=str(args.model), dtype=args.dtype, gpu_memory_utilization=0.4, max_num_batched_tokens=65536,
              max_model_len=args.max_model_len, seed=0, **({} if args.dtype == "bfloat16" else {"enforce_eager": True}))
    result = {"engine_start_s": time.perf_counter() - start, "prompts": len(prompts), "max_tokens": args.max_tokens,
              "vocab_rows": llm.llm_engine.model_config.get_vocab_size(), "tokenizer_ids": len(tokenizer)}
    generate(llm, prompts[:16], 16, 0)  # warm-up: the sampler's Triton kernels compile on first use
    lean = {"detokenize": False, "flat_logprobs": True}  # what llm_bridge.seeded_rollout asks of verl's server
    for label, logprobs, fields in (("gen_s_with_logprobs", 0, {}), ("gen_s_without_logprobs", None, {}),
                                    ("gen_s_lean_with_logprobs", 0, lean), ("gen_s_lean_unseeded_with_logprobs", 0,
                                                                           {**lean, "seed": None}),
                                    ("gen_s_with_logprobs_again", 0, {})):
        outs, seconds = generate(llm, prompts, args.max_tokens, logprobs, **fields)
        result[label] = seconds
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    result["generated_tokens"] = tokens
    result["tokens_per_s"] = tokens / result["gen_s_with_logprobs_again"]
    result["agreement"] = hf_logprobs(args.model, prompts, outs, 32, len(tokenizer))
    args.out.write_text(json.dumps(result, indent=1))
    print("[check] " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
