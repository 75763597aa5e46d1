# Config validation, the hardware preset, and the small functions the rules call.
import json
import os

import yaml
from pathlib import Path

from snakemake.utils import validate

from llm_bridge.checks import check_all
from llm_bridge.fit import stage_settings
from llm_bridge.errors import InputError

validate(config, "../config/schema.yaml")


def load_preset(name):
    path = Path(workflow.basedir) / "config" / "presets" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "schema")
        raise WorkflowError(f"config preset: unknown preset {name!r} ({path} not found); choose one of {known}")
    with path.open() as fh:
        preset = yaml.safe_load(fh)
    validate(preset, "../config/presets/schema.yaml")
    return {**preset, "name": name}


PRESET = load_preset(config["preset"])
try:
    check_all(config, PRESET, Path.cwd())
except InputError as exc:
    raise WorkflowError(str(exc)) from None
RUN = f"runs/{config['run_name']}"
SRC = os.path.join(workflow.basedir, "src", "llm_bridge")
PPO = config["ppo"]["enabled"]
LAST_TRAINED = "ppo" if PPO else "sft"


def as_json(value):
    """Params are compared by Snakemake between runs: a changed value reruns the rule and what follows."""
    return json.dumps(value, sort_keys=True)


def stage_config(stage):
    """The config section of a stage with the preset's hardware-specific values on top (overrides joined)."""
    return stage_settings(config, PRESET, stage)


def preset_env():
    """The preset's extra training environment (NCCL, allocator); absent when empty so CPU params don't change."""
    return {"env": {k: str(v) for k, v in PRESET["env"].items()}} if PRESET.get("env") else {}


def cluster():
    return {k: PRESET[k] for k in ("nnodes", "gpus_per_node", "procs_per_node")}


def slurm_resources(rule_name):
    """Per-rule cluster resources from the preset (the profile holds no per-rule values)."""
    res = {**PRESET["slurm"].get("default", {}), **PRESET["slurm"].get(rule_name, {})}
    for key in ("partition", "account", "qos"):
        if key in PRESET["slurm"]:
            res[f"slurm_{key}" if key != "account" else "slurm_account"] = PRESET["slurm"][key]
    return res


def upload_repo_id():
    repo = config["upload"].get("repo_id")
    if not repo:
        raise WorkflowError("upload.repo_id is not set: give the Hub repository, e.g. upload: {repo_id: my-team/llama-gsm8k}")
    return repo


def record(rule):
    """Shell suffix that writes the stage's provenance manifest once its outputs are complete."""
    return (f" && python -m llm_bridge.provenance record --rule {rule} --params {{params.cfg:q}} --inputs {{input}}"
            f" --outputs {{output}} --out {RUN}/manifests/{rule}.json")
