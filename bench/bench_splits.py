"""Host time of a PPO update's batch splits, verl's row selection against llm_bridge.verl_fixes': the work a
training worker does with the GPU idle before each mini batch and micro batch. Prints a markdown table;
docs/benchmarks.md records it.

    python bench/bench_splits.py [--samples 256 --mini-batch 64 --token-budget 16384 --repeats 5]

The batch is shaped like the H200 preset's PPO step (256 samples, prompts up to 160 tokens, responses up to 256,
13 nested fields, as a worker holds them after verl's left_right_2_no_padding), on the CPU. One update's splits:
tu.make_iterator into mini batches, then verl's prepare_micro_batches (token-budget micro batches) of each. Each
mode runs in its own process, since the fix is installed at import (LLM_BRIDGE_VERL_SPLITS=1 keeps verl's).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_MODE = r"""
import json, sys, time, torch
import llm_bridge.verl_fixes  # noqa: F401  (as VERL_USE_EXTERNAL_MODULES loads it into verl's processes)
from verl import DataProto
from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.utils.padding import left_right_2_no_padding
samples, mini_batch, budget, repeats = (int(x) for x in sys.argv[1:5])
P, R = 160, 256
g = torch.Generator().manual_seed(0)
mask = torch.zeros(samples, P + R, dtype=torch.long)
for i in range(samples):  # left-padded prompts of 60-160 tokens, responses of 100-256
    mask[i, P - int(torch.randint(60, P, (1,), generator=g)):P + int(torch.randint(100, R, (1,), generator=g))] = 1
ids = torch.randint(5, 90, (samples, P + R), generator=g)
fields = dict(prompts=ids[:, :P], responses=ids[:, P:], input_ids=ids, attention_mask=mask,
              position_ids=(mask.cumsum(-1) - 1).clamp(min=0), response_mask=mask[:, P:].float())
per_token = ("advantages", "returns", "old_log_probs", "ref_log_prob", "rollout_log_probs", "values")
fields |= {key: torch.randn(samples, R, generator=g) for key in per_token}
data = left_right_2_no_padding(DataProto.from_dict(tensors=fields).to_tensordict())
lengths = {"prompts": mask[:, :P].sum(-1), "attention_mask": mask.sum(-1)}
for key in per_token + ("response_mask", "responses", "prompts", "attention_mask", "loss_mask"):
    n = lengths.get(key, mask[:, P:].sum(-1))  # the worker's batch holds these nested too (TransferQueue's jagged)
    data[key] = torch.nested.as_nested_tensor([data[key][i, :n[i]] for i in range(samples)], layout=torch.jagged)
tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=budget)
times, micro = [], 0
for _ in range(repeats + 1):  # the first warms up
    start, micro = time.perf_counter(), 0
    for mini in tu.make_iterator(data, mini_batch_size=mini_batch, epochs=1, seed=0):
        micro += len(transformer_impl.prepare_micro_batches(data=mini)[0])
    times.append(time.perf_counter() - start)
nested = sum(1 for value in data.values() if isinstance(value, torch.Tensor) and value.is_nested)
print(json.dumps({"ms": [1000 * t for t in times[1:]], "micro_batches": micro, "nested_fields": nested}))
"""


def measure(verl_splits: bool, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), LLM_BRIDGE_VERL_SPLITS="1" if verl_splits else "0")
    done = subprocess.run([sys.executable, "-c", ONE_MODE, str(args.samples), str(args.mini_batch),
                           str(args.token_budget), str(args.repeats)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--mini-batch", type=int, default=64)
    parser.add_argument("--token-budget", type=int, default=16384, help="tokens a micro batch (the H100 rows' actor)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {"verl 0.9.1 (unbind, pick, concatenate)": measure(True, args),
            "llm-bridge (one slice or index_select a field)": measure(False, args)}
    verl_ms = statistics.median(next(iter(rows.values()))["ms"])
    print(f"{args.samples} samples, mini batches of {args.mini_batch}, micro batches of at most {args.token_budget} "
          f"tokens; median of {args.repeats}")
    print("| selection | nested fields | micro batches | ms an update's splits | vs verl |\n|---|---|---|---|---|")
    for name, row in rows.items():
        ms = statistics.median(row["ms"])
        print(f"| {name} | {row['nested_fields']} | {row['micro_batches']} | {ms:.1f} | {verl_ms / ms:.2f}x |")


if __name__ == "__main__":
    main()
