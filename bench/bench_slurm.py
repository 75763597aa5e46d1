"""Benchmark the SLURM path on the CI cluster (tests/slurm/up.sh): per stage, seconds from sbatch to the job's
start (SLURM's own SubmitTime/StartTime, 1 s resolution), the job's run time, and the gap between one job's end
and the next submission (Snakemake noticing the end through squeue, plus the plugin's fixed 5 s pause before
every sbatch); and the wall time of the same pipeline through SLURM and locally (`--cores 2`). Prints a table.

    python bench/bench_slurm.py [--keep DIR] [--skip-local] [--preset cpu]
Record the output in docs/benchmarks.md (section "SLURM") with the date and the machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml
from rich.table import Table

from bench_cpu import table_console  # bench/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parents[1]
JOBCOMP = Path("/var/log/slurm/jobcomp.log")


def bench_config(preset: str) -> dict:
    """The small config of the tests (tests/test_slurm.py, tests/test_pipeline.py): 20 SFT steps, 2 PPO steps."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["run_name"], config["preset"] = "bench", preset
    config["data"]["synthetic"] = {"n_train": 320, "n_test": 40}
    config["sft"].update(total_epochs=2, save_freq=5)
    config["ppo"].update(enabled=True, total_training_steps=2, save_freq=1)
    config["evaluate"].update(n_samples=16, batch_size=16)
    return config


def snakemake(workdir: Path, configfile: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"benchmark run failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout + proc.stderr


def records() -> dict[str, dict]:
    out = {}
    for line in JOBCOMP.read_text().splitlines():
        kv = dict(re.findall(r"(\w+)=(\S*)", line))
        if kv.get("JobState") == "COMPLETED":
            out[kv["JobId"]] = kv
    return out


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument("--skip-local", action="store_true", help="only the SLURM run")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--target", default="merged_model")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    (root / "slurm").mkdir(parents=True, exist_ok=True)
    config = bench_config(args.preset)
    slurm_cfg = root / "slurm" / "config.yaml"
    slurm_cfg.write_text(yaml.safe_dump(config, sort_keys=False))

    wall_slurm, log = snakemake(root / "slurm", slurm_cfg, "--profile", str(REPO / "slurm"), args.target)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S+?rule_([A-Za-z_]+)/", log)
    time.sleep(3)  # the last job's jobcomp line
    recs = records()
    rows, prev_end = [], None
    for jobid, rule in submitted:
        rec = recs[jobid]
        submit, start, end = ts(rec["SubmitTime"]), ts(rec["StartTime"]), ts(rec["EndTime"])
        gap = (submit - prev_end).total_seconds() if prev_end else None
        rows.append((rule, jobid, rec["NodeCnt"], (start - submit).total_seconds(), (end - start).total_seconds(), gap))
        prev_end = end

    wall_local = None
    if not args.skip_local:
        (root / "local").mkdir(exist_ok=True)
        local_cfg = root / "local" / "config.yaml"
        local_cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        wall_local, _ = snakemake(root / "local", local_cfg, "--cores", "2", args.target)

    console = table_console()
    table = Table(title=f"SLURM per stage ({args.preset} preset, small config; SLURM timestamps, 1 s resolution)")
    for col in ("stage", "SLURM job", "nodes", "submit -> start s", "run s", "previous end -> submit s"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for rule, jobid, nodes, queued, ran, gap in rows:
        table.add_row(rule, jobid, nodes, f"{queued:.0f}", f"{ran:.0f}", "-" if gap is None else f"{gap:.0f}")
    console.print(table)
    n = len(rows)
    queued_total = sum(r[3] for r in rows)
    gaps = [r[5] for r in rows if r[5] is not None]
    ran_total = sum(r[4] for r in rows)
    summary = Table(title=f"{args.target}: wall time through SLURM vs locally")
    for col in ("", "seconds"):
        summary.add_column(col, justify="right")
    summary.add_row("through SLURM (snakemake --profile slurm)", f"{wall_slurm:.0f}")
    summary.add_row("  of which jobs running", f"{ran_total:.0f}")
    summary.add_row(f"  submit -> start, all {n} jobs", f"{queued_total:.0f}")
    summary.add_row(f"  end -> next submit, {len(gaps)} gaps (mean {sum(gaps) / max(1, len(gaps)):.1f})", f"{sum(gaps):.0f}")
    if wall_local is not None:
        summary.add_row("locally (snakemake --cores 2)", f"{wall_local:.0f}")
        summary.add_row("SLURM / local", f"{wall_slurm / wall_local:.2f}x")
    console.print(summary)
    console.print(f"{platform.node()}, {os.cpu_count()} cores, {datetime.now():%Y-%m-%d %H:%M}; cluster: "
                  f"{subprocess.run(['sinfo', '-h', '-o', '%P %D %c %m'], capture_output=True, text=True).stdout.split(chr(10))[0]}"
                  f" (partition, nodes, CPUs/node, MB/node); run folder {root}")


if __name__ == "__main__":
    main()
