"""The measured runs behind bench/bench_gpu.py, one per process (fresh GPU memory, clean peak counters).

  ceiling: a minimal hand loop (bf16 weights, fused AdamW, SDPA causal) on random tokens, eager or compiled
  verl:    verl's SFT trainer in process, built from the same overrides as the `sft` stage, each step timed
  micro:   the two suspects in isolation: log-probs over the 128k vocabulary and attention over packed rows
Each prints one line `RESULT <json>` (rank 0) that bench_gpu.py collects.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def result(**values) -> None:
    print("RESULT " + json.dumps(values), flush=True)


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def sync() -> None:  # a no-op on CPU, where the harness itself is tested
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_median_s(fn, warmup: int, repeats: int) -> float:
    """Median wall of `fn` in seconds between CUDA events (the GPU's own clock), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def ceiling(model_dir: Path, compiled: bool, batch: int, seq: int, steps: int) -> None:
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    step_fn = model if not compiled else torch.compile(model)
    x = torch.randint(0, config.vocab_size, (batch, seq), device="cuda")

    def step():
        loss = step_fn(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step_s = cuda_median_s(step, warmup=3, repeats=steps)  # the warm-up compiles where compiled
    result(step_s=step_s, tokens=batch * seq, sq_tokens=batch * seq * seq, peak_gib=peak_gib())


def verl_sft(overrides: list[str], profile_step: int, out: Path | None) -> None:
    """verl's sft_trainer.run_sft, with the checkpoint save skipped and train_batch timed."""
    from hydra import compose, initialize_config_dir

    import verl.trainer.sft_trainer as st
    from verl.utils import tensordict_utils as tu
    from verl.utils.device import auto_set_device
    from verl.utils.distributed import destroy_global_process_group, initialize_global_process_group

    with initialize_config_dir(config_dir=str(Path(st.__file__).parent / "config"), version_base=None):
        cfg = compose(config_name="sft_trainer_engine", overrides=overrides)
    auto_set_device(cfg)
    initialize_global_process_group()
    trainer = st.SFTTrainer(config=cfg)
    trainer.ckpt_handler.save_checkpoint = lambda *a, **k: None  # 15 GB per save: not what is measured
    client, steps = trainer.training_client, []
    original = client.train_batch

    def timed(data):
        sync()
        start = time.perf_counter()
        lengths = list(tu.get(data, "global_token_num"))
        profiler = None
        if len(steps) + 1 == profile_step:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                          torch.profiler.ProfilerActivity.CUDA])
            profiler.__enter__()
        output = original(data=data)
        sync()
        if profiler is not None:
            profiler.__exit__(None, None, None)
            if torch.distributed.get_rank() == 0:
                table = profiler.key_averages().table(sort_by="self_device_time_total", row_limit=25)
                calls = sum(e.count for e in profiler.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
                print(table, f"\nkernel launches in the step: {calls}", flush=True)
                if out:
                    (out / "profile.txt").write_text(table + f"\nkernel launches: {calls}\n")
        steps.append({"start": start, "train_s": time.perf_counter() - start, "tokens": sum(lengths),
                      "sq_tokens": sum(n * n for n in lengths), "profiled": profiler is not None})
        return output

    client.train_batch = timed
    trainer.fit()
    if torch.distributed.get_rank() == 0:
        # a step = from one train_batch start to the next (data loading included); the last has no next
        skip = 2 if len(steps) > 4 else 1  # first steps: allocator growth, kernel autotuning
        pairs = [(a, b) for a, b in zip(steps[skip:], steps[skip + 1:]) if not a["profiled"]]
        timed_steps = [a for a, _ in pairs]
        result(step_s=statistics.median(b["start"] - a["start"] for a, b in pairs),
               train_s=statistics.median(s["train_s"] for s in timed_steps),
               tokens=statistics.median(s["tokens"] for s in timed_steps),
               sq_tokens=statistics.median(s["sq_tokens"] for s in timed_steps), steps=len(steps), peak_gib=peak_gib(),
               reserved_gib=torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else 0.0)
    destroy_global_process_group()


def timeit(fn, reps: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def micro(model_dir: Path, lengths_file: Path | None) -> None:
    """Log-probs (forward + backward) for 4096 tokens, and attention for a packed 16384-token row."""
    from transformers import AutoConfig

    import verl.utils.torch_functional as tf
    from llm_bridge import gpu_support
    from llm_bridge.logprobs import logprobs_vectorised

    config = AutoConfig.from_pretrained(model_dir)
    torch.manual_seed(0)
    tokens, vocab = 4096, config.vocab_size
    logits = torch.randn(tokens, vocab, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,), device="cuda")
    hidden = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(vocab, config.hidden_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def loop():  # verl's fallback when flash-attn is absent
        with torch.autocast("cuda", dtype=torch.bfloat16):
            tf.logprobs_from_logits_v2(logits, labels).sum().backward()

    def vectorised():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logprobs_vectorised(logits, labels).sum().backward()

    def fused_torch():  # verl's model.use_fused_kernels, torch backend: lm_head matmul included
        from verl.utils.experimental.torch_functional import FusedLinearForPPO

        FusedLinearForPPO(impl_backend="torch")(hidden, weight, labels)[0].sum().backward()

    ref = tf.logprobs_from_logits_v2(logits.detach().float()[:256], labels[:256])
    err = (logprobs_vectorised(logits.detach()[:256], labels[:256]) - ref).abs().max().item()
    logprob = {"loop_s": timeit(loop, 1), "vectorised_s": timeit(vectorised), "fused_torch_s": timeit(fused_torch),
               "max_abs_diff": err, "tokens": tokens}
    del logits, hidden, weight
    # Attention: GSM8K-like lengths packed into one 16384-token row, the tuned preset's micro batch.
    import random

    random.seed(0)
    lens = json.loads(lengths_file.read_text()) if lengths_file and lengths_file.exists() else []
    lens = [n for n in lens if n > 1] or [random.randint(60, 300) for _ in range(200)]
    packed, total = [], 0
    while total < 16384:
        n = min(random.choice(lens), 16384 - total)
        packed.append(n)
        total += n
    heads, kv, dim = config.num_attention_heads, config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    q = torch.randn(1, heads, total, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, kv, total, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, kv, total, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    pos = torch.cat([torch.arange(n) for n in packed]).unsqueeze(0).cuda()
    seg = torch.repeat_interleave(torch.arange(len(packed)), torch.tensor(packed)).cuda()
    mask = (seg[:, None] == seg[None, :]) & torch.ones(total, total, dtype=torch.bool, device="cuda").tril()
    module = torch.nn.Module()
    module.is_causal, module.training, module.num_key_value_groups = True, True, heads // kv

    def dense():  # what transformers' SDPA does with a packed row: a T x T block-diagonal mask
        kk, vv = (t.repeat_interleave(heads // kv, dim=1) for t in (k, v))
        torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=mask[None, None]).sum().backward()

    def varlen():
        gpu_support.varlen_attention_forward(module, q, k, v, None, position_ids=pos.clone())[0].sum().backward()

    with torch.no_grad():  # correctness: varlen against SDPA sequence by sequence
        out = gpu_support.varlen_attention_forward(module, q, k, v, None, position_ids=pos.clone())[0][0]
        errs, start = [], 0
        for n in packed[:20]:
            kk, vv = (t[:, :, start:start + n].repeat_interleave(heads // kv, dim=1) for t in (k, v))
            ref = torch.nn.functional.scaled_dot_product_attention(q[:, :, start:start + n].float(), kk.float(), vv.float(),
                                                                   is_causal=True)[0].transpose(0, 1)
            errs.append(((out[start:start + n].float() - ref).norm() / ref.norm()).item())
            start += n
    attention = {"dense_mask_s": timeit(dense, 3), "varlen_s": timeit(varlen, 3), "tokens": total,
                 "sequences": len(packed), "varlen_rel_err_max": max(errs)}
    result(logprob=logprob, attention=attention)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("worker", choices=["ceiling", "verl", "micro"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile-step", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--lengths", type=Path)
    parser.add_argument("--overrides", default="[]", help="JSON list of verl overrides")
    args = parser.parse_args()
    if args.worker == "ceiling":
        ceiling(args.model_dir, args.compile, args.batch, args.seq, args.steps)
    elif args.worker == "verl":
        verl_sft(json.loads(args.overrides), args.profile_step, args.out)
    else:
        micro(args.model_dir, args.lengths)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
