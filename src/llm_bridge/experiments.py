"""Experiments: many runs declared in one file, `experiments/<name>.yaml`, run by one Snakemake invocation.

    base:                      # changes to config/config.yaml shared by every variant (nested, like a --configfile)
      data: {synthetic: {n_train: 320}}
    grid:                      # every combination, in this order (the last key varies fastest)
      sft.lr: [1.0e-3, 3.0e-3, 1.0e-2]
      ppo.kl_coef: [0.001, 0.01]
    variants:                  # and/or an explicit list, after the grid
      - {name: long-sft, set: {sft.total_epochs: 10}}

Each variant's config is the workflow's config + `base` + its own keys, validated against config/schema.yaml
like the main config; a bad key is an error naming the file, the variant and the key, before anything runs.
Which variant's folder holds each stage (shared stages are computed once) is `owners` below.
"""
from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

from llm_bridge.errors import InputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # one path component, as run_name
# Keys that change the shape of the workflow (which rules and outputs exist) or the hardware: the same for
# every variant of an experiment; `base` may set them.
FIXED = ("run_name", "preset", "ppo.enabled", "upload.enabled")
TOP_KEYS = {"base", "grid", "variants"}


def deep_merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def nested(dotted: dict) -> dict:
    """{"sft.lr": 1e-3} -> {"sft": {"lr": 1e-3}}; nested dicts pass through."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, last = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = deep_merge(node.get(last, {}), value) if isinstance(value, dict) else value
    return out


def dotted_keys(changes: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in changes.items():
        path = f"{prefix}{key}"
        keys += dotted_keys(value, path + ".") if isinstance(value, dict) else [path]
    return keys


def short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def declared_variants(spec: dict, where: str) -> list[tuple[str, dict]]:
    """(name, changes) in declaration order: the grid's combinations, then the explicit list."""
    out = []
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise InputError(f"{where}: grid must map keys to non-empty lists of values, e.g. grid: {{sft.lr: [1.0e-3, 3.0e-3]}}")
    if grid:
        for combo in itertools.product(*grid.values()):
            changes = dict(zip(grid, combo))
            out.append(("_".join(f"{k.split('.')[-1]}{short(v)}" for k, v in changes.items()), changes))
    for i, item in enumerate(spec.get("variants") or []):
        if not isinstance(item, dict) or "name" not in item or not set(item) <= {"name", "set"}:
            raise InputError(f"{where}: variants[{i}] must be {{name: <name>, set: {{key: value, ...}}}}")
        out.append((str(item["name"]), item.get("set") or {}))
    if not out:
        raise InputError(f"{where}: no variants; give a `grid:` or a `variants:` list")
    return out


def load(path: Path, config: dict, schema: dict) -> tuple[dict, dict[str, dict]]:
    """(the experiment's base config, {"<experiment>/<variant>": config}) in declaration order."""
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise InputError(f"experiment {path.stem!r}: {path} not found; experiments here: {known}")
    spec = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    if not isinstance(spec, dict) or set(spec) - TOP_KEYS:
        raise InputError(f"{where}: unknown top-level keys {sorted(set(spec) - TOP_KEYS)}; allowed: {sorted(TOP_KEYS)}")
    base = deep_merge(config, nested(spec.get("base") or {}))
    base.pop("experiment", None)
    check(base, schema, f"{where}, base")
    runs = {}
    for name, changes in declared_variants(spec, where):
        what = f"{where}, variant {name!r}"
        if not NAME.match(name):
            raise InputError(f"{what}: the name must be letters, digits, '_', '.', '-' (it is a folder under runs/{path.stem}/)")
        if f"{path.stem}/{name}" in runs:
            raise InputError(f"{what}: declared twice")
        changes = nested(changes)
        fixed = [k for k in dotted_keys(changes) if k in FIXED]
        if fixed:
            raise InputError(f"{what}: {', '.join(fixed)} cannot differ between variants (set it in `base:`)")
        variant = deep_merge(base, changes)
        check(variant, schema, what)
        variant["run_name"] = f"{path.stem}/{name}"
        runs[variant["run_name"]] = variant
    return base, runs


def check(config: dict, schema: dict, what: str) -> None:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return
    key, message = ".".join(str(p) for p in error.absolute_path), error.message
    if error.validator == "additionalProperties":  # name the misspelt key itself, and what is allowed there
        allowed = sorted(error.schema.get("properties", {}))
        key = ".".join(filter(None, [key, *sorted(set(error.instance) - set(allowed))]))
        message = f"unknown key; allowed here: {', '.join(allowed)}"
    raise InputError(f"{what}: key {key or '(top level)'}: {message} (see config/schema.yaml)")


def owners(runs: list[str], key: Callable[[str, str], str], upstream: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """(run, stage) -> the run whose folder holds that stage's output: the first-declared run whose settings for
    the stage and for every stage upstream of it are the same. Appending a run never moves an existing output."""
    chain_keys: dict[tuple[str, str], tuple] = {}

    def chain_key(run: str, stage: str) -> tuple:
        if (run, stage) not in chain_keys:
            chain_keys[run, stage] = (key(run, stage), tuple(chain_key(run, up) for up in upstream[stage]))
        return chain_keys[run, stage]

    first: dict[tuple, str] = {}
    return {(run, stage): first.setdefault((stage, chain_key(run, stage)), run) for run in runs for stage in upstream}
