"""The actor's log-probs over the vocabulary alone, forward and backward, in each form llm_bridge.logprobs offers
(eager: one vectorised cross-entropy on fp32 copies, the h200 presets' until 2026-12-08; compiled; triton:
llm_bridge.logprob_kernel, theirs since),
on bf16 logits of a micro batch's size (Llama-3.2's 128,256 words). The backward gets one weight a token, as
PPO's loss gives it. Prints a table (forward + backward and forward alone in ms, the memory each adds above the
logits, the effective GB/s of the bf16 logits' bytes, the largest error against float64) and writes it as JSON.
Needs only torch and Triton (the lent GPU machine's bare image):
    python3 bench/bench_logprobs.py --out bench/results/logprobs-h100-<date>.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from gpu_workers import cuda_median_s  # beside this file

from llm_bridge.logprobs import KINDS, logprobs_function

VOCAB = 128256


def measure(kind: str, tokens: int, repeats: int) -> dict:
    generator = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(tokens, VOCAB, device="cuda", generator=generator) * 2).to(torch.bfloat16)
    logits.requires_grad_()
    labels = torch.randint(0, VOCAB, (tokens,), device="cuda", generator=generator)
    weights = torch.randn(tokens, device="cuda", generator=generator)
    fn = logprobs_function(kind)

    def forward_backward():
        (fn(logits, labels) * weights).sum().backward()
        logits.grad = None

    def forward_only():
        with torch.no_grad():
            fn(logits, labels)

    forward_backward()  # compiles where it compiles, outside the memory reading
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    forward_backward()
    extra_gib = (torch.cuda.max_memory_allocated() - base) / 2**30
    both_ms, fwd_ms = (cuda_median_s(call, warmup=2, repeats=repeats) * 1e3 for call in (forward_backward, forward_only))

    rows = slice(0, 512)  # the error on a slice against float64
    sample = logits.detach()[rows].double().requires_grad_()
    want = sample.log_softmax(-1).gather(-1, labels[rows, None]).squeeze(-1)
    (want * weights[rows]).sum().backward()
    part = logits.detach()[rows].clone().requires_grad_()
    got = fn(part, labels[rows])
    (got * weights[rows]).sum().backward()
    logits_gb = tokens * VOCAB * 2 / 1e9
    return {"kind": kind, "tokens": tokens, "fwd_bwd_ms": both_ms, "fwd_ms": fwd_ms, "extra_gib": extra_gib,
            "logits_gb_per_s": 3 * logits_gb / both_ms * 1e3,  # the least a backward can move: read, read, write
            "logprob_err": (got.double() - want).abs().max().item(),
            "grad_err": (part.grad.double() - sample.grad).abs().max().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--tokens", default="16384,24576", help="micro batch sizes (the H100's and H200's actor budgets)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for tokens in map(int, args.tokens.split(",")):
        for kind in args.kinds.split(","):
            rows.append(measure(kind, tokens, args.repeats))
            torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), flush=True)
    header = (f"{'kind':<9} {'tokens':>7} {'fwd+bwd ms':>11} {'fwd ms':>8} {'extra GiB':>10} {'GB/s':>7} "
              f"{'logprob err':>12} {'grad err':>9}")
    print("\n" + header)
    for r in rows:
        print(f"{r['kind']:<9} {r['tokens']:>7} {r['fwd_bwd_ms']:11.2f} {r['fwd_ms']:8.2f} {r['extra_gib']:10.2f} "
              f"{r['logits_gb_per_s']:7.0f} {r['logprob_err']:12.2e} {r['grad_err']:9.2e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
