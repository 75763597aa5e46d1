"""Does PPO learn in the embedded default? Runs the whole default chain (config/config.yaml) once per seed and
prints, per seed and on average: mean reward over the first and last quarter of PPO steps, eval accuracy of
base / SFT / PPO, wall and CPU time, peak memory.

    python bench/bench_learning.py [--keep DIR] [--seeds 0 1 2] [--config KEY=VALUE ...] [--configfile FILE]
Record the output in docs/benchmarks.md with the date and the machine (say whether it was shared).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench_cpu import run_measured, snakemake_cmd, table_console
from rich.table import Table

from llm_bridge.metrics import quarter_means


def run_seed(workdir: Path, seed: int, extra: list[str], configfile: Path | None = None) -> dict:
    files = ["--configfile", str(configfile.resolve())] if configfile else []
    wall, peak, _, cpu = run_measured(snakemake_cmd("all", *files, "--config", f"seed={seed}", f"run_name=seed{seed}", *extra),
                                      workdir)
    run = workdir / "runs" / f"seed{seed}"
    rewards = [s["critic/score/mean"] for s in json.loads((run / "ppo" / "result.json").read_text())["metrics"]]
    first, last = quarter_means(rewards)
    models = json.loads((run / "evaluate" / "eval.json").read_text())["models"]
    return {"seed": seed, "first": first, "last": last, "steps": len(rewards), "wall": wall,
            "cpu": cpu, "peak": peak, "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", nargs="*", default=[], help="extra snakemake --config KEY=VALUE pairs")
    parser.add_argument("--configfile", type=Path, help="a YAML file merged over config/config.yaml (nested keys)")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="llm-bridge-learning-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(workdir, seed, args.config, args.configfile))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "models"}
                         | {m: r["accuracy"] for m, r in rows[-1]["models"].items()}), flush=True)

    names = list(rows[0]["models"])
    table = Table(title="PPO learning in the embedded default" + (f" ({' '.join(args.config)})" if args.config else "")
                  + (f" ({args.configfile})" if args.configfile else ""))
    for column in ["seed", "reward first 1/4", "reward last 1/4", "gain", *[f"eval {m}" for m in names], "PPO - SFT",
                   "wall s", "CPU s", "peak GiB"]:
        table.add_column(column, justify="right")

    def cells(r: dict) -> list[str]:
        acc = {m: r["models"][m]["accuracy"] for m in names}
        return [f"{r['first']:.3f}", f"{r['last']:.3f}", f"{r['last'] - r['first']:+.3f}", *[f"{acc[m]:.1%}" for m in names],
                f"{acc.get('ppo', 0) - acc.get('sft', 0):+.1%}", f"{r['wall']:.0f}", f"{r['cpu']:.0f}", f"{r['peak'] / 2**30:.2f}"]

    for r in rows:
        table.add_row(str(r["seed"]), *cells(r))
    mean = {"first": statistics.mean(r["first"] for r in rows), "last": statistics.mean(r["last"] for r in rows),
            "wall": statistics.mean(r["wall"] for r in rows), "cpu": statistics.mean(r["cpu"] for r in rows),
            "peak": max(r["peak"] for r in rows),
            "models": {m: {"accuracy": statistics.mean(r["models"][m]["accuracy"] for r in rows)} for m in names}}
    table.add_row("mean (peak: max)", *cells(mean))
    table_console().print(table)
    n = sorted({r["models"][m]["n"] for r in rows for m in names})
    print(f"eval n = {n} test problems per model; {rows[0]['steps']} PPO steps; run folder: {workdir}")


if __name__ == "__main__":
    main()
