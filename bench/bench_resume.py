"""Measure kill -> resume on the embedded default: SIGKILL the whole `snakemake` tree in the middle of `sft` and
of `ppo` (just after verl wrote a checkpoint, with training going on), run `snakemake` again at once, and time
how long until the resumed training logs its first step. Prints a table.

    python bench/bench_resume.py [--keep DIR]
Record the output in docs/reliability.md with the date and the machine.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from bench_cpu import run_folder, snakemake_cmd, table_console  # bench/ is on sys.path when a script in it runs


def tracker_step(ckpt: Path) -> int:
    try:
        return int((ckpt / "latest_checkpointed_iteration.txt").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def logged_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"benchmark: no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def kill_and_resume(workdir: Path, stage: str) -> dict:
    ckpt = workdir / "runs" / "tiny" / stage / "checkpoints"
    proc = subprocess.Popen(snakemake_cmd(stage), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: tracker_step(ckpt) > 0, 900, f"{stage} checkpoint")
    checkpoint = tracker_step(ckpt)
    [first_log] = sorted(ckpt.glob("metrics-*.jsonl"))
    wait_for(lambda: max(logged_steps(first_log), default=0) > checkpoint, 300, f"{stage} step after the checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake, the launcher, verl: a dead node, not a polite stop
    killed = time.monotonic()
    proc.wait()
    killed_at_step = max(logged_steps(first_log))
    subprocess.run(snakemake_cmd(stage, "--unlock"), cwd=workdir, check=True, capture_output=True)
    restarted = time.monotonic()
    proc = subprocess.Popen(snakemake_cmd(stage), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def resumed_log() -> list[int]:
        return [s for p in sorted(ckpt.glob("metrics-*.jsonl")) if p != first_log for s in logged_steps(p)]

    wait_for(lambda: bool(resumed_log()), 900, f"{stage} step after the restart")
    first_resumed = time.monotonic()
    if proc.wait() != 0:
        sys.exit(f"benchmark: the resumed {stage} failed")
    result = json.loads((ckpt.parent / "result.json").read_text())
    return {"stage": stage, "killed_at_step": killed_at_step, "resumed_from_step": result["resumed_from_step"],
            "first_resumed_step": min(resumed_log()), "final_step": result["global_step"],
            "restart_to_step_s": first_resumed - restarted, "kill_to_step_s": first_resumed - killed}


def main() -> None:
    workdir = run_folder(__doc__.splitlines()[0], "llm-bridge-resume-")
    subprocess.run(snakemake_cmd("parquet", "base_model"), cwd=workdir, check=True, capture_output=True)
    rows = [kill_and_resume(workdir, "sft")]
    subprocess.run(snakemake_cmd("sft_model"), cwd=workdir, check=True, capture_output=True)
    rows.append(kill_and_resume(workdir, "ppo"))

    table = Table(title=f"kill -> resume on the embedded default, {os.cpu_count()} CPU cores "
                        f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}")
    for column in ("stage", "killed at step", "resumed from step", "first step after restart", "final step",
                   "restart -> first step (s)", "kill -> first step (s)"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["stage"], str(r["killed_at_step"]), str(r["resumed_from_step"]), str(r["first_resumed_step"]),
                      str(r["final_step"]), f"{r['restart_to_step_s']:.1f}", f"{r['kill_to_step_s']:.1f}")
    table_console().print(table)
    print(f"(run folder: {workdir})")


if __name__ == "__main__":
    main()
