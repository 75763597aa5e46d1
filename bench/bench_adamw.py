"""One optimizer step of the PPO actor's (or critic's) AdamW alone, as verl's FSDP engine takes it
(`FSDPEngine.optimizer_step`: clip the gradient norm, check it is finite on the host, step, read the norm back), in
three forms:

  foreach          torch's default AdamW on CUDA (verl's; a pass over memory for each of its ~10 foreach ops)
  fused            torch's fused AdamW (one kernel), verl's host checks unchanged
  fused-no-sync    fused AdamW skipping a non-finite step on the GPU (`found_inf`, as GradScaler drives it): no host
                   check between the gradient norm and the step, the norm read back after the step

The parameters are laid out as FSDP1 flattens the Llama-3.2-1B shape: one flat fp32 tensor a decoder layer and one
for the embedding and final norm (1.24 B in all). Prints one table row a form: median step wall (host included), the
memory traffic the step needs at minimum (28 bytes a parameter: read weight, gradient, two moments; write weight and
moments) over that wall.
    python bench/bench_adamw.py            (a GPU; --tiny: a few small tensors on CPU)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from gpu_workers import sync  # beside this file

LAYER = 2048 * 2048 * 2 + 2048 * 512 * 2 + 3 * 2048 * 8192 + 2 * 2048  # q, o, k, v, gate/up/down, two norms
FLAT_SIZES = [128256 * 2048 + 2048] + [LAYER] * 16  # the tied embedding + final norm, then each decoder layer
BYTES_A_PARAM = 28


def flat_params(sizes: list[int], device: str) -> list[torch.nn.Parameter]:
    params = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, device=device) * 0.02)
        p.grad = torch.randn(n, device=device) * 1e-3
        params.append(p)
    return params


def step_as_verl(params, optimizer, clip: float) -> float:
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad()
    else:
        optimizer.step()
    return grad_norm.item()


def step_without_sync(params, optimizer, clip: float) -> float:
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
    optimizer.found_inf = (~torch.isfinite(grad_norm)).float()
    optimizer.step()
    return grad_norm.item()


def measure(form: str, sizes: list[int], device: str, steps: int) -> dict:
    params = flat_params(sizes, device)
    fused = form.startswith("fused")
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.01, fused=fused, foreach=None if fused else True)
    step = step_without_sync if form == "fused-no-sync" else step_as_verl
    walls = []
    for _ in range(steps + 2):
        sync()
        t0 = time.perf_counter()
        step(params, optimizer, 1.0)
        sync()
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls[2:])
    n = sum(sizes)
    del params, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"form": form, "params": n, "step_ms": wall * 1e3, "gb_per_s": n * BYTES_A_PARAM / wall / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few small tensors on CPU")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    sizes = [4096] * 4 if device == "cpu" else FLAT_SIZES
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {name}")
    print("| form | parameters | step ms (median) | GB/s at 28 bytes a parameter |\n|---|---|---|---|")
    for form in ("foreach", "fused", "fused-no-sync"):
        row = measure(form, sizes, device, args.steps)
        print(f"| {row['form']} | {row['params']:,} | {row['step_ms']:.1f} | {row['gb_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
