# Config validation, the hardware preset, and the small functions the rules call.
import json
import os
import sys
import time

import yaml
from pathlib import Path

from snakemake.utils import validate

from llm_bridge import experiments
from llm_bridge import config_errors
from llm_bridge.checks import check_all
from llm_bridge.fit import stage_settings
from llm_bridge.errors import InputError

try:  # one sentence per problem: the key's path, the file that set it, what is allowed (not jsonschema's dump)
    config_errors.validate(
        config,
        Path(workflow.basedir) / "config" / "schema.yaml",
        [Path(workflow.basedir) / "config" / "config.yaml", *map(Path, workflow.overwrite_configfiles)],
        workflow.config_settings.config,
    )
except InputError as exc:
    raise WorkflowError(str(exc)) from None

# Rules call `python -m llm_bridge.<stage>`: make that the interpreter Snakemake itself runs in (the project's
# environment), also when it was started as .venv/bin/snakemake without activating the environment.
os.environ.update(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def load_preset(name):
    path = Path(workflow.basedir) / "config" / "presets" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "schema")
        raise WorkflowError(f"config preset: unknown preset {name!r} ({path} not found); choose one of {known}")
    with path.open() as fh:
        preset = yaml.safe_load(fh)
    validate(preset, "../config/presets/schema.yaml")
    return {**preset, "name": name}


def experiment_file(name):
    """`--config experiment=NAME`: experiments/NAME.yaml in the working directory, else in the workflow's folder;
    or a path to a .yaml file."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    local = Path("experiments") / f"{name}.yaml"
    return local if local.exists() else Path(workflow.basedir) / "experiments" / f"{name}.yaml"


# RUNS: run name -> its config. A plain run is one run, runs/<run_name>/, with literal paths (so rule names stay
# targets: `snakemake sft`). An experiment is one run per variant, runs/<experiment>/<variant>/, and the rules'
# paths hold the wildcard {run} (docs/experiments.md).
EXPERIMENT = config.get("experiment")
try:
    if EXPERIMENT:
        with open(os.path.join(workflow.basedir, "config", "schema.yaml")) as fh:
            BASE, RUNS = experiments.load(experiment_file(EXPERIMENT), config, yaml.safe_load(fh))
        EXPERIMENT = experiment_file(EXPERIMENT).stem
    else:
        BASE, RUNS = config, {config["run_name"]: config}
    PRESET = load_preset(BASE["preset"])
    for run_config in RUNS.values():
        check_all(run_config, PRESET, Path.cwd())
except InputError as exc:
    raise WorkflowError(str(exc)) from None
RUN = "runs/{run}" if EXPERIMENT else f"runs/{config['run_name']}"
SRC = os.path.join(workflow.basedir, "src", "llm_bridge")
PPO = BASE["ppo"]["enabled"]
LAST_TRAINED = "ppo" if PPO else "sft"


wildcard_constraints:
    run="[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*",


# logging.console: compact (default: stage output only in runs/<name>/logs/, progress on the terminal) or full
# (everything on the terminal too). An environment variable, not a param: switching it reruns nothing.
CONSOLE = config.get("logging", {}).get("console", "compact")
os.environ.update(LLM_BRIDGE_CONSOLE=CONSOLE)
if CONSOLE == "compact":  # no download/load/save bars and advisory warnings of HF libraries
    os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
START_TIME = time.time()
END_OF_RUN_DIR = f"runs/{EXPERIMENT}" if EXPERIMENT else RUN  # what onsuccess/onerror point at (Snakefile)


def verl_logging(run_config):
    """The logging settings verl's stages get (their params): what is only about the terminal stays out."""
    return {k: v for k, v in run_config.get("logging", {}).items() if k != "console"}


def as_json(value):
    """Params are compared by Snakemake between runs: a changed value reruns the rule and what follows."""
    return json.dumps(value, sort_keys=True)


def stage_manifest(rule):
    """The provenance manifest every stage writes last (llm_bridge.provenance record), shown in the report."""
    return report(
        f"{RUN}/manifests/{rule}.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"
    )


def stage_config(run_config, stage):
    """The config section of a stage with the preset's hardware-specific values on top (overrides joined)."""
    return stage_settings(run_config, PRESET, stage)


def preset_env():
    """The preset's extra training environment (NCCL, allocator); absent when empty so CPU params don't change."""
    return {"env": {k: str(v) for k, v in PRESET["env"].items()}} if PRESET.get("env") else {}


def cluster():
    return {k: PRESET[k] for k in ("nnodes", "gpus_per_node", "procs_per_node")}


# preset key -> the SLURM executor plugin's resource
SLURM_NAMES = {"partition": "slurm_partition", "account": "slurm_account", "qos": "qos"}
MULTI_NODE_RULES = ("sft", "ppo")  # rules whose job spans the preset's nnodes nodes
# sft and ppo resume from verl's latest checkpoint: SLURM may requeue them (preemption, node failure), and the
# restarted job appends to its log instead of truncating it
REQUEUE = "--requeue --open-mode=append"


def slurm_resources(rule_name):
    """Per-rule cluster resources from the preset (the profile holds no per-rule values), in the names the SLURM
    executor plugin (2.6.1) reads. The preset's `gpu` is GPUs per node: one node asks for --gpus=N, several nodes
    for --gres=gpu:N (per node), and never one task per GPU (the plugin's default --ntasks-per-gpu would multiply
    cpus_per_task by the GPU count). With nnodes > 1, sft and ppo span nnodes nodes with one task per node
    (mpi="srun": the rule's shell runs in the allocation and starts one torchrun / Ray worker per node)."""
    slurm = PRESET["slurm"]
    res = {**slurm.get("default", {}), **slurm.get(rule_name, {})}
    for key, name in SLURM_NAMES.items():
        if key in slurm:
            res[name] = slurm[key]
    if rule_name in MULTI_NODE_RULES:
        nodes = PRESET["nnodes"]
        if res.get("nodes", nodes) != nodes:
            raise WorkflowError(
                f"preset {PRESET['name']}: slurm.{rule_name}.nodes={res['nodes']} but nnodes={nodes}; "
                "drop slurm.*.nodes (it follows nnodes)"
            )
        if nodes > 1:
            res.update(nodes=nodes, tasks=nodes, mpi="srun")
        res["slurm_extra"] = " ".join(x for x in (res.get("slurm_extra"), REQUEUE) if x)
    gpus, model = res.pop("gpu", 0), res.pop("gpu_model", None)
    if gpus:
        if int(res.get("nodes", 1)) > 1:
            res["gres"] = f"gpu:{model}:{gpus}" if model else f"gpu:{gpus}"
        else:
            res.update(gpu=gpus, **({"gpu_model": model} if model else {}))
        res["tasks_per_gpu"] = 0
    return res


def all_local_cores(wildcards):
    """Threads of sft and ppo: every core of `--cores N`, so that on one machine an experiment's trainings run
    one after another (each uses all cores; PPO several GiB of RAM). Remote executors do not count cores, and
    the SLURM job's CPUs are the preset's cpus_per_task: the variants' trainings run as parallel jobs."""
    return workflow.global_resources["_cores"].value or 1


def srun_per_node(rule_name):
    """Shell prefix for the rules that span nodes, one task per node of the job's allocation (its tasks see
    SLURM_NODEID etc.; the rule's own shell, run by the plugin's jobstep, does not). Empty on one node."""
    nodes = PRESET["nnodes"]
    if nodes == 1:
        return ""
    cpus = slurm_resources(rule_name).get("cpus_per_task")
    return (
        f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1{f' --cpus-per-task={cpus}' if cpus else ''}"
        " --kill-on-bad-exit=1 --label "
    )


def _preset_default_resources():
    """Every rule (not only those that call slurm_resources) gets the preset's default resources, partition,
    account and QOS; the profile's default-resources are only the fallback below them. Snakemake has no public
    hook for a workflow-wide default, so this extends the parsed defaults that each rule copies when it is
    defined (snakemake 9.27, pinned)."""
    from snakemake.resources import Resources

    try:
        workflow.resource_settings._parsed_default_resources.update(Resources.from_mapping(slurm_resources("default")))
    except AttributeError:
        print(
            "llm-bridge: warning: could not apply the preset's default SLURM resources to every rule "
            "(snakemake internals changed); only sft, ppo, merged_model and evaluate get them"
        )


_preset_default_resources()


def _check_before_submission():
    """Runs from `onstart`: Snakemake has built the DAG (and the executor) and submitted nothing yet. With the
    SLURM executor, every job's resources are checked against the cluster (llm_bridge.slurm_check); a preset
    that spans nodes is refused outside SLURM."""
    plugin = getattr(workflow, "executor_plugin", None)
    name = getattr(plugin, "name", "")
    # `all` and other local jobs are never submitted
    jobs = [
        (job.rule.name, dict(job.resources.items()))
        for job in workflow.dag.needrun_jobs()
        if not (job.is_local or job.is_norun)
    ]
    spans = [r for r, _ in jobs if r in MULTI_NODE_RULES]
    if name != "slurm":
        if PRESET["nnodes"] > 1 and spans and "SLURM_JOB_ID" not in os.environ:
            raise WorkflowError(
                f"preset {PRESET['name']} spans {PRESET['nnodes']} nodes ({', '.join(sorted(set(spans)))}): "
                "run it on a SLURM cluster with `snakemake --profile slurm ...`"
            )
        return
    from llm_bridge import slurm_check

    if not slurm_check.available():
        raise WorkflowError("the SLURM executor is selected, but sinfo/scontrol are not on PATH")
    fix = f"in config/presets/{PRESET['name']}.yaml (or for one run: --set-resources <rule>:<resource>=<value>)"
    try:
        problems = slurm_check.check_jobs(jobs, fix)
    except RuntimeError as exc:  # scontrol/sinfo do not answer
        raise WorkflowError(f"cannot check the jobs against the SLURM cluster, nothing was submitted: {exc}") from None
    if problems:
        raise WorkflowError(
            "the SLURM cluster cannot run this workflow as configured; nothing was submitted:\n  "
            + "\n  ".join(problems)
        )
    print(f"llm-bridge: {len(jobs)} job(s) checked against the SLURM cluster (partitions, GPUs, accounts): OK")


onstart:
    _check_before_submission()


def upload_repo_id(upload):
    repo = upload.get("repo_id")
    if not repo:
        raise WorkflowError(
            "upload.repo_id is not set: give the Hub repository, e.g. upload: {repo_id: my-team/llama-gsm8k}"
        )
    return repo


def other_style_fraction(c):
    """The share of SFT demonstrations written in the other answer style: synthetic data only (real GSM8K keeps its own)."""
    return c["data"]["synthetic"].get("other_style_fraction", 0.0) if c["data"]["source"] == "synthetic" else 0.0


def eval_note(c):
    """What a reader of the eval table needs to know about this config."""
    notes = [] if PPO else ["PPO is off in this config (ppo.enabled: false): the merged model is the SFT model."]
    styled = other_style_fraction(c)
    if styled:
        notes.append(
            f"{styled:.0%} of the SFT demonstrations end 'The answer is N.' (data.synthetic.other_style_fraction), which"
            " the GSM8K scorer does not count: the SFT model scores low by design, and PPO's reward teaches '#### N'."
        )
    return " ".join(notes)


# What each stage's output depends on besides its inputs: the `cfg` param of its rule (Snakemake reruns a rule
# when it changes), and the stages whose outputs it reads. Two runs share a stage when both agree for the
# stage and everything upstream of it.
STAGE_PARAMS = {
    "raw_data": lambda c: {"data": c["data"], "seed": c["seed"]},
    "base_model": lambda c: {"model": c["model"], "seed": c["seed"]},
    "parquet": lambda c: {
        **{k: c["data"][k] for k in ("max_prompt_length", "instruction")},
        "sft_other_style_fraction": other_style_fraction(c),
    },
    "sft": lambda c: {
        "sft": stage_config(c, "sft"),
        "cluster": cluster(),
        "seed": c["seed"],
        "stall_timeout_s": PRESET["stall_timeout_s"],
        "logging": verl_logging(c),
        **preset_env(),
    },
    "sft_model": lambda c: {},
    "ppo": lambda c: {
        "ppo": stage_config(c, "ppo"),
        "cluster": cluster(),
        "seed": c["seed"],
        "max_prompt_length": c["data"]["max_prompt_length"],
        "stall_timeout_s": PRESET["stall_timeout_s"],
        "logging": verl_logging(c),
        **preset_env(),
    },
    "merged_model": lambda c: {},
    "evaluate": lambda c: {**c["evaluate"], "note": eval_note(c)},
    "plots": lambda c: {},
    "model_card": lambda c: c,
    "upload": lambda c: c["upload"],
}
UPSTREAM = {
    "raw_data": [],
    "base_model": ["raw_data"],
    "parquet": ["raw_data", "base_model"],
    "sft": ["base_model", "parquet"],
    "sft_model": ["sft"],
    "ppo": ["sft_model", "parquet"],
    "merged_model": [LAST_TRAINED],
    "evaluate": ["base_model", "parquet", "merged_model"] + (["sft_model"] if PPO else []),
    "plots": ["sft", "evaluate"] + (["ppo"] if PPO else []),
    "model_card": ["merged_model", "evaluate"],
    "upload": ["model_card", "evaluate"],
}
OWNER = experiments.owners(list(RUNS), lambda run, stage: as_json(STAGE_PARAMS[stage](RUNS[run])), UPSTREAM)


def run_of(wildcards):
    return wildcards.get("run", BASE["run_name"])


def cfg(stage):
    """The rule's `cfg` param: its stage settings for the run being built, as JSON."""
    return lambda wildcards: as_json(STAGE_PARAMS[stage](RUNS[run_of(wildcards)]))


def at(stage, *paths):
    """Input function: `paths` (relative to a run's folder) of `stage`'s outputs for the run being built, in the
    folder of the run that holds them (shared stages: the first-declared run with the same settings)."""
    found = lambda wildcards: [f"runs/{OWNER[run_of(wildcards), stage]}/{path}" for path in paths]
    return (lambda wildcards: found(wildcards)[0]) if len(paths) == 1 else found


def run_targets(run):
    """What `all` builds for one run."""
    wildcards = {"run": run}
    targets = [
        at("merged_model", "merged_model"),
        at("evaluate", "evaluate/eval.json"),
        at("plots", "report/eval_table.html"),
    ]
    targets += [at("upload", "upload/receipt.json")] if BASE["upload"]["enabled"] else []
    return [target(wildcards) for target in targets]


# evaluate: table row -> (stage, its folder in a run)
EVAL_MODELS = {
    "base": ("base_model", "base_model"),
    "sft": ("sft_model", "sft/model") if PPO else ("merged_model", "merged_model"),
}
if PPO:
    EVAL_MODELS["ppo"] = ("merged_model", "merged_model")


def eval_models(wildcards):
    return {name: at(stage, path)(wildcards) for name, (stage, path) in EVAL_MODELS.items()}


def compare_variants():
    """Per variant: its config and where its SFT, PPO and evaluation results are (shared stages: another
    variant's folder); the benchmark files are not inputs (Snakemake writes them beside the outputs)."""
    out = {}
    for run, run_config in RUNS.items():
        w = {"run": run}
        out[run] = {
            "config": run_config,
            "sft": at("sft", "sft/result.json")(w),
            "eval": at("evaluate", "evaluate/eval.json")(w),
            "ppo": at("ppo", "ppo/result.json")(w) if PPO else None,
            "benchmarks": {s: at(s, f"benchmarks/{s}.tsv")(w) for s in {"sft", LAST_TRAINED}},
        }
    return out


def experiment_targets(wildcards):
    """The `experiment` target: every variant (as `all`) and the comparison report."""
    if not EXPERIMENT:
        raise WorkflowError(
            "the target `experiment` needs an experiment: snakemake --cores 2 experiment --config experiment=NAME "
            "(experiments/NAME.yaml; docs/experiments.md)"
        )
    return [target for run in RUNS for target in run_targets(run)] + [f"runs/{EXPERIMENT}/compare/report.html"]
