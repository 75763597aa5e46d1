"""Where a run stands, on one screen, from what Snakemake itself knows (its dry run says what would rerun and why;
its metadata in .snakemake/ holds each job's start and end time) plus the stages' own files (result.json,
checkpoint trackers, eval.json, the upload receipt). Staleness is Snakemake's verdict, never re-derived here.

    llm-bridge status [runs/<name>] [--configfile my.yaml ...]   # default: the run of config/config.yaml
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# The stages in chain order (rule names); model_card and upload run only when upload is enabled.
STAGES = ["raw_data", "base_model", "parquet", "sft", "sft_model", "ppo", "merged_model", "evaluate", "plots",
          "model_card", "upload"]
# Snakemake's dry-run reasons, as the kind of change a person acts on
REASONS = [("Params have changed", "params changed"), ("Code has changed", "code changed"),
           ("Set of input files has changed", "input set changed"), ("Updated input files", "input changed"),
           ("Input files updated by another job", "an input reruns"), ("Missing output files", "output missing"),
           ("Incomplete output files", "interrupted"), ("Forced execution", "forced")]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def planned(workdir: Path, run_name: str, configfiles: list[Path]) -> dict[str, str]:
    """rule -> why Snakemake would run it now (its dry run with the current config and code)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--dry-run",
           "--quiet", "host", "progress", "--cores", "1", "--config", f"run_name={run_name}", "--nocolor"]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"llm-bridge status: Snakemake's dry run failed:\n{out[-3000:]}")
    jobs, rule = {}, None
    for line in out.splitlines():
        found = re.match(r"^(?:local)?rule (\w+):", line)
        if found:
            rule = found.group(1)
        elif rule and line.strip().startswith("reason:"):
            jobs[rule] = why(line.split("reason:", 1)[1].strip())
    return jobs


def why(reason: str) -> str:
    """Snakemake's reason in a few words: the kinds of change, with the changed inputs' names where it has them
    ("Updated input files: .../sft.py" -> "input changed (sft.py)")."""
    kinds = []
    for part in filter(None, (p.strip() for p in reason.split(";"))):
        label = next((lab for key, lab in REASONS if part.startswith(key)), part)
        files = part.split(":", 1)[1].split(",") if ":" in part and label in ("input changed", "input set changed") else []
        names = sorted({Path(f.strip()).name for f in files if f.strip()})
        kinds.append(f"{label} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else label)
    return ", ".join(dict.fromkeys(kinds))


def metadata(workdir: Path, output: str) -> dict:
    """Snakemake's record of the job that made `output` (its file under .snakemake/metadata), or {}."""
    key = base64.urlsafe_b64encode(output.encode()).decode()
    path = workdir / ".snakemake" / "metadata" / key
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def running(workdir: Path, output: str) -> bool:
    """Snakemake marks an output incomplete while its job runs; a lock says a Snakemake is still at work."""
    key = base64.urlsafe_b64encode(output.encode()).decode()
    locks = workdir / ".snakemake" / "locks"
    return (workdir / ".snakemake" / "incomplete" / key).exists() and locks.is_dir() and any(locks.iterdir())


def stage_output(name: str, rule: str) -> str:
    """The output Snakemake's records are keyed by (each stage writes its manifest last; upload its receipt)."""
    return f"runs/{name}/upload/receipt.json" if rule == "upload" else f"runs/{name}/manifests/{rule}.json"


def training_detail(run: Path, stage: str) -> str:
    """Last checkpoint step and the key metrics of sft/ppo (from result.json, else the live checkpoint tracker)."""
    from llm_bridge import console

    result = run / stage / "result.json"
    if result.exists():
        data = json.loads(result.read_text())
        last = data["metrics"][-1] if data.get("metrics") else {}
        return f"step {data['global_step']}  {console.metrics_summary(stage, last)}".strip()
    tracker = run / stage / "checkpoints" / "latest_checkpointed_iteration.txt"
    if tracker.exists() and tracker.read_text().strip().isdigit():
        return f"checkpoint at step {tracker.read_text().strip()}"
    return ""


def stage_rows(workdir: Path, name: str, plan: dict[str, str]) -> list[tuple[str, str, str, str]]:
    rows, run = [], workdir / "runs" / name
    for rule in STAGES:
        output = stage_output(name, rule)
        meta = metadata(workdir, output)
        if running(workdir, output):
            state = "running"
        elif rule in plan:
            state = f"stale: {plan[rule]}" if meta else "not run yet"
        elif meta or (workdir / output).exists():
            state = "done"
        else:
            continue  # not part of this config (e.g. upload while upload.enabled is false)
        wall = duration(meta["endtime"] - meta["starttime"]) if meta.get("endtime") and meta.get("starttime") else ""
        detail = training_detail(run, rule) if rule in ("sft", "ppo") else ""
        rows.append((rule, state, wall, detail))
    return rows


def eval_table(run: Path) -> str:
    path = run / "evaluate" / "eval.md"  # written by evaluate beside eval.json (its markdown_table)
    return path.read_text().strip() if path.exists() else ""


def receipt_line(run: Path) -> str:
    path = run / "upload" / "receipt.json"
    if not path.exists():
        return "upload: none yet"
    r = json.loads(path.read_text())
    return f"upload: {r.get('repo_id')}@{r.get('revision')} commit {r.get('commit')}"


def render(workdir: Path, name: str, configfiles: list[Path]) -> str:
    plan = planned(workdir, name, configfiles)
    rows = stage_rows(workdir, name, plan)
    run = workdir / "runs" / name
    config = " + ".join(["config/config.yaml", *map(str, configfiles)])
    lines = [f"runs/{name} (against {config} and the code as it is now)", ""]
    width = max((len(state) for _, state, _, _ in rows), default=0)
    lines += [f"  {rule:<13} {state:<{width}} {wall:>6}  {detail}".rstrip() for rule, state, wall, detail in rows]
    table = eval_table(run)
    lines += ["", table] if table else []
    lines += ["", receipt_line(run)]
    if plan:
        lines.append(f"to bring it up to date: snakemake --cores 2 all --config run_name={name}"
                     + "".join(f" --configfile {c}" for c in configfiles))
    return "\n".join(lines)


def print_end_of_run(run_dir: str, seconds: float, ok: bool) -> None:
    """The last lines of a `snakemake` run (its onsuccess/onerror handlers): eval table, paths, total time."""
    run = Path(run_dir)
    if not ok:
        print(f"llm-bridge: the run stopped after {duration(seconds)}; the error is above, the stages' full logs are in "
              f"{run}/logs/. Fix it and run the same command again: finished stages are kept, training resumes from its "
              f"last checkpoint (`llm-bridge status {run}` shows where each stage stands).", flush=True)
        return
    table = eval_table(run)
    lines = ["", table] if table else []
    for what, path in (("merged model", run / "merged_model"), ("report", run / "report"),
                       ("upload receipt", run / "upload" / "receipt.json")):
        if path.exists():
            lines.append(f"{what}: {path}")
    if (run / "report").exists():
        lines.append("HTML report: snakemake --report report.html (add the same --config/--configfile)")
    lines.append(f"logs: {run}/logs/   total time: {duration(seconds)}")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-bridge status", description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="runs/<name> (default: the run_name of the config)")
    parser.add_argument("--configfile", nargs="*", type=Path, default=[], help="the --configfile(s) the run used")
    args = parser.parse_args(argv)
    workdir = Path.cwd()
    if args.run is None:
        name = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["run_name"]
        for extra in args.configfile:
            name = (yaml.safe_load(extra.read_text()) or {}).get("run_name", name)
        args.run = Path("runs") / name
    if not args.run.is_dir():
        raise SystemExit(f"llm-bridge status: {args.run} does not exist (runs are under runs/<run_name>/ of this folder)")
    run = args.run.resolve()
    if run.parent.name != "runs":
        raise SystemExit(f"llm-bridge status: {args.run} is not a run folder (runs/<run_name>)")
    print(render(run.parent.parent, run.name, [c.resolve() for c in args.configfile]))
