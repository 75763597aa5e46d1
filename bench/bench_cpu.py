"""Benchmark the embedded default on this machine: end-to-end wall time, peak memory of the whole process tree,
per-stage time, PPO step timing split, accuracies, and the no-op rerun decision time. Prints a table.

    python bench/bench_cpu.py [--keep DIR]
Record the output in docs/benchmarks.md with the date and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
STAGES = ["raw_data", "base_model", "parquet", "sft", "sft_model", "ppo", "merged_model", "evaluate", "plots"]


def table_console() -> Console:
    """A console for the result table: full width when the output goes to a file (rich would cut it to 80
    columns and truncate every header), as it does when a benchmark runs in the background."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def tree_pss(root: psutil.Process, cpu: dict[int, float] | None = None) -> int:
    """Proportional set size summed over the tree: shared pages (torch, CUDA libraries mapped by every Ray
    worker) are counted once in total, not once per process as RSS would. Records each process's CPU seconds
    so far in `cpu` (Ray's workers are not reaped by their parents, so /usr/bin/time would not count them)."""
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
            if cpu is not None:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, int, str, float]:
    """Wall seconds, peak PSS of the process tree (sampled every 0.2 s), combined output, CPU seconds (user +
    system of every process of the tree, as last sampled: a process living under 0.2 s may be missed)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, root, cpu = [0], psutil.Process(proc.pid), {}

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss(root, cpu))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    sampler.join()
    if proc.returncode:
        sys.exit(f"benchmark run failed:\n{output[-3000:]}")
    return time.monotonic() - start, peak[0], output, sum(cpu.values())


def stage_seconds(workdir: Path) -> dict[str, float]:
    """From Snakemake's own benchmark-free record: the mtime gaps of each stage's manifest."""
    times = {}
    for stage in STAGES:
        manifest = workdir / "runs" / "tiny" / "manifests" / f"{stage}.json"
        if manifest.exists():
            times[stage] = manifest.stat().st_mtime
    ordered = sorted(times.items(), key=lambda kv: kv[1])
    return {stage: t - (ordered[i - 1][1] if i else t) for i, (stage, t) in enumerate(ordered)}


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(os.cpu_count()), *args]


def run_folder(description: str, prefix: str) -> Path:
    """The folder a benchmark runs in: --keep DIR, or a new temporary one."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    workdir = parser.parse_args().keep or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def main() -> None:
    workdir = run_folder(__doc__.splitlines()[0], "llm-bridge-bench-")
    snakemake = snakemake_cmd()
    wall, peak, _, cpu = run_measured(snakemake + ["all"], workdir)
    noop = [run_measured(snakemake + ["all", "--dry-run"], workdir)[0] for _ in range(3)]
    run = workdir / "runs" / "tiny"
    results = json.loads((run / "evaluate" / "eval.json").read_text())["models"]
    ppo_steps = json.loads((run / "ppo" / "result.json").read_text())["metrics"]
    steady = ppo_steps[1:] or ppo_steps  # step 1 includes vLLM/worker warm-up

    console = table_console()
    table = Table(title=f"llm-bridge embedded default on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
                        f"{time.strftime('%Y-%m-%d')}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("end-to-end wall time (fresh run)", f"{wall:.0f} s")
    table.add_row("CPU time, user + system, whole process tree", f"{cpu:.0f} s")
    table.add_row("peak memory, whole process tree (PSS)", f"{peak / 2**30:.2f} GiB")
    table.add_row("no-op rerun decision (snakemake -n, median of 3)", f"{statistics.median(noop):.2f} s")
    stages = stage_seconds(workdir)
    for stage, seconds in stages.items():
        table.add_row(f"  stage {stage}", f"{seconds:.0f} s")
    step_total = sum(s.get("timing_s/step", 0) for s in ppo_steps)
    table.add_row("  PPO start-up + shut-down (Ray, vLLM, workers: stage time minus steps)", f"{stages.get('ppo', 0) - step_total:.0f} s")
    for key in ("gen", "old_log_prob", "ref", "values", "update_critic", "update_actor", "update_weights", "step"):
        values = [s[f"timing_s/{key}"] for s in steady if f"timing_s/{key}" in s]
        if values:
            table.add_row(f"  PPO {key} per step (mean, steps 2+)", f"{statistics.mean(values):.2f} s")
    rewards = [s["critic/score/mean"] for s in ppo_steps]
    table.add_row("PPO mean reward, first 4 / last 4 steps", f"{statistics.mean(rewards[:4]):.3f} / {statistics.mean(rewards[-4:]):.3f}")
    for name, row in results.items():
        table.add_row(f"accuracy {name} (n={row['n']})", f"{row['accuracy']:.1%}")
    console.print(table)
    print(f"(run folder: {workdir})")


if __name__ == "__main__":
    main()
