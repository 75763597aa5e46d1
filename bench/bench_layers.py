"""The PPO actor's micro step alone, without verl: forward over a packed row, log-probs over the vocabulary,
backward, in three forms of the same model (--critic: the critic's instead, a one-output value head and a squared
error, no vocabulary). It isolates what `tuned-compile` (llm_bridge.verl_fixes) changes:

  eager    transformers' own kernels (what the critic runs in the tuned preset)
  liger    Liger's RMSNorm, RoPE and SwiGLU kernels (the actor in the tuned preset)
  liger-triton  the same with the log-probs in Triton kernels, no fp32 logits (LLM_BRIDGE_FAST_LOGPROBS=triton)
  compile  each decoder layer under torch.compile, whole (the packed row's boundaries handed down from before
           the layers: llm_bridge.gpu_support.boundaries_as_kwargs), and the log-probs compiled (LLM_BRIDGE_COMPILE=1)

Llama-3.2-1B shape, random init, bf16 weights (--fsdp: fp32 weights under FSDP1, as verl's actor), varlen
attention (llm_bridge.gpu_support), one packed row of PPO-sized sequences (lengths drawn between 150 and 500 tokens,
about the GSM8K prompt + 256-token response) up to --tokens, a new draw each step so that compiled layers see changing
shapes as in PPO. Prints one table row a mode (median step after the warm-up, tokens/s, MFU as bench_gpu.py
computes it for SFT) and writes them as JSON.
    python bench/bench_layers.py --out bench/results/layers.json          (a GPU; --tiny: a tiny model on CPU)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_gpu import critic_params, mfu  # beside this file (MFU as for SFT)
from gpu_workers import peak_gib, sync

LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096,
            "tie_word_embeddings": True, "rope_theta": 500000.0}
TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "tie_word_embeddings": True}


def packed_row(tokens: int, vocab: int, generator: torch.Generator, device: str, low: int, high: int):
    """input ids, position ids (restarting at 0 for each sequence) and the lengths of one packed row."""
    lengths = []
    while True:
        n = int(torch.randint(low, high, (1,), generator=generator))
        if sum(lengths) + n > tokens:
            break
        lengths.append(n)
    positions = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
    ids = torch.randint(0, vocab, (1, positions.shape[1]), generator=generator).to(device)
    return ids, positions, lengths


def fsdp_wrapped(model, device: str):
    """As verl's FSDP engine wraps the actor on one GPU: FSDP1, one unit a decoder layer, fp32 weights cast to bf16
    for each forward and backward (MixedPrecision), gradients reduced in fp32."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method="tcp://127.0.0.1:29517", rank=0,
                                world_size=1)
    layer = type(model.model.layers[0])
    return FullyShardedDataParallel(
        model, auto_wrap_policy=ModuleWrapPolicy({layer}), use_orig_params=False,
        device_id=torch.cuda.current_device() if device == "cuda" else None,
        mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                       buffer_dtype=torch.float32))


def build(mode: str, shape: dict, device: str, fsdp: bool, critic: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    from llm_bridge.gpu_support import compile_decoder_layers  # importing it registers "varlen"

    torch.manual_seed(0)
    # the critic as verl builds it: token classification with one label, the value of each token
    config = LlamaConfig(**shape, attn_implementation="varlen", num_labels=1)
    with torch.device(device):
        model = (LlamaForTokenClassification if critic else LlamaForCausalLM)(config)
    if not fsdp and device == "cuda":
        model = model.to(torch.bfloat16)
    if mode.startswith("liger"):  # before wrapping, as verl applies it
        from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
    if fsdp:
        model = fsdp_wrapped(model, device)
    if mode == "compile":  # after wrapping, as llm_bridge.verl_fixes does
        compile_decoder_layers(model)
    return model


def measure(mode: str, shape: dict, device: str, fsdp: bool, tokens: int, warmup: int, steps: int, low: int,
            high: int, critic: bool = False) -> dict:
    from llm_bridge.logprobs import logprobs_function

    model = build(mode, shape, device, fsdp, critic)
    logprobs = logprobs_function("compiled" if mode == "compile" else "triton" if mode.endswith("-triton") else "eager")
    generator = torch.Generator().manual_seed(1)
    times, counted, squared = [], 0, 0
    started = time.perf_counter()
    for step in range(warmup + steps):
        ids, positions, lengths = packed_row(tokens, shape["vocab_size"], generator, device, low, high)
        sync()
        start = time.perf_counter()
        logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        if critic:  # values against stand-in returns
            (logits[..., 0].float() - 1.0).square().mean().backward()
        else:
            (-logprobs(logits[:, :-1], ids[:, 1:]).mean()).backward()
        model.zero_grad(set_to_none=True)
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            counted += sum(lengths)
            squared += sum(n * n for n in lengths)
        print(f"[{mode}] step {step + 1}/{warmup + steps}: {time.perf_counter() - start:.3f} s", flush=True)
    step_s = statistics.median(times)
    row = {"mode": ("critic-" if critic else "") + mode + ("+fsdp" if fsdp else ""), "step_s": step_s,
           "tokens": counted / steps, "sq_tokens": squared / steps, "tokens_per_s": counted / steps / step_s,
           "warmup_s": time.perf_counter() - started - sum(times), "peak_gib": peak_gib()}
    row["mfu"] = mfu(row, shape, nproc=1, params=critic_params(shape) if critic else None)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="eager,compile,liger", help="in this order (liger last: it patches classes)")
    parser.add_argument("--tokens", type=int, default=16384, help="a micro batch's token budget (the H100's actor)")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out: compilation, then the dynamic recompile")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--fsdp", action="store_true",
                        help="wrapped as verl wraps the actor on a GPU (fp32 weights, FSDP1; FSDP1 needs a GPU)")
    parser.add_argument("--critic", action="store_true", help="the critic's micro step (value head) instead")
    parser.add_argument("--tiny", action="store_true", help="a tiny model on CPU (the harness itself)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device, shape = ("cpu", TINY) if args.tiny else ("cuda", LLAMA_1B)
    low, high = (20, 60) if args.tiny else (150, 500)
    tokens = min(args.tokens, 512) if args.tiny else args.tokens
    rows = []
    for mode in args.modes.split(","):
        try:
            rows.append(measure(mode, shape, device, args.fsdp, tokens, args.warmup, args.steps, low, high,
                                args.critic))
        except Exception as error:  # noqa: BLE001 (one mode failing leaves the others worth having)
            print(f"[{mode}] failed: {error!r}", flush=True)
            continue
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                            "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"\n{'mode':<18} {'s/step':>8} {'tokens/s':>10} {'MFU':>7} {'warm-up s':>10} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['mode']:<18} {r['step_s']:8.3f} {r['tokens_per_s']:10,.0f} {r['mfu']:7.1%} {r['warmup_s']:10.1f} "
              f"{r['peak_gib']:9.1f}")


if __name__ == "__main__":
    main()
