"""Experiments (docs/experiments.md): a 3 x 2 sweep (3 SFT learning rates x 2 PPO KL coefficients) in one
invocation, stages shared between variants computed once, a variant added later runs only what is new, and
the comparison report renders in a real headless Chromium.

The job counts are Snakemake's own plan (dry runs); one real sweep (session fixture, the small settings of
tests/test_pipeline.py with 1 SFT epoch and 1 PPO step) backs the incremental and report tests: 1 x 2, one
SFT shared by two PPO runs (each PPO start-up costs minutes on 2 cores; the dry runs cover the 3 x 2).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    REPO,
    default_config,
    light_ppo,
    light_sft,
    planned_jobs,
    rendered_dom,
    snakemake,
    write_config,
)

SWEEP = {"grid": {"sft.lr": [1.0e-3, 3.0e-3, 1.0e-2], "ppo.kl_coef": [0.001, 0.01]}}
RUN_SWEEP = {"grid": {"sft.lr": [3.0e-3], "ppo.kl_coef": [0.001, 0.01]}}  # the one that really runs
VARIANTS = [f"lr0.003_kl_coef{kl}" for kl in ("0.001", "0.01")]


def sweep_config() -> dict:
    config = default_config()
    config["data"]["synthetic"] = {"n_train": 320, "n_test": 40}
    light_sft(config)["sft"].update(total_epochs=1, save_freq=5)  # 10 steps
    light_ppo(config)["ppo"].update(total_training_steps=1, save_freq=1)
    config["evaluate"].update(n_samples=16, batch_size=16)
    return config


def experiment_workdir(workdir: Path, spec: dict, name: str = "lr-sweep") -> Path:
    (workdir / "experiments").mkdir(parents=True, exist_ok=True)
    (workdir / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return write_config(workdir / "config.yaml", sweep_config())


def plan(workdir: Path, configfile: Path, experiment: str, *args: str, check: bool = True):
    return snakemake(workdir, configfile, "experiment", *args, "--dry-run", "--config", f"experiment={experiment}", check=check)


def test_sweep_runs_shared_stages_once(tmp_path):
    configfile = experiment_workdir(tmp_path, SWEEP)
    jobs = planned_jobs(plan(tmp_path, configfile, "lr-sweep"))
    assert {k: jobs[k] for k in ("raw_data", "base_model", "parquet", "sft", "sft_model", "ppo")} == {
        "raw_data": 1, "base_model": 1, "parquet": 1, "sft": 3, "sft_model": 3, "ppo": 6}
    assert jobs["merged_model"] == jobs["evaluate"] == 6 and jobs["compare"] == 1


def test_appending_a_variant_never_moves_an_existing_output():
    from llm_bridge.experiments import owners

    settings = {"a": {"sft": 1, "ppo": 1}, "b": {"sft": 1, "ppo": 2}, "c": {"sft": 2, "ppo": 1}}
    upstream = {"sft": [], "ppo": ["sft"]}
    first = owners(list(settings), lambda run, stage: settings[run][stage], upstream)
    # b shares a's SFT; c's PPO settings equal a's, but after another SFT: not shared
    assert first == {("a", "sft"): "a", ("a", "ppo"): "a", ("b", "sft"): "a", ("b", "ppo"): "b",
                     ("c", "sft"): "c", ("c", "ppo"): "c"}
    settings["d"] = {"sft": 2, "ppo": 1}
    grown = owners(list(settings), lambda run, stage: settings[run][stage], upstream)
    assert {k: v for k, v in grown.items() if k[0] != "d"} == first and grown["d", "ppo"] == "c"


@pytest.mark.parametrize("variant, key", [({"name": "typo", "set": {"sft.lrr": 0.1}}, "sft.lrr: unknown key"),
                                          ({"name": "bad-type", "set": {"ppo.kl_coef": "high"}}, "ppo.kl_coef"),
                                          ({"name": "preset", "set": {"preset": "h200"}}, "preset")])
def test_bad_variant_is_refused_before_anything_runs(tmp_path, variant, key):
    configfile = experiment_workdir(tmp_path, {**SWEEP, "variants": [variant]})
    proc = plan(tmp_path, configfile, "lr-sweep", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in text
    assert "experiments/lr-sweep.yaml" in text and f"variant {variant['name']!r}" in text and key in text
    assert not (tmp_path / "runs").exists()


def dag_edges(dot: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Snakemake's --dag (graphviz): node id -> rule, and (from, to) edges."""
    nodes = {m[1]: m[2] for m in re.finditer(r"^\s*(\d+)\[label = \"(\w+)", dot, re.MULTILINE)}
    return nodes, {(a, b) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)}


def test_slurm_profile_submits_variants_as_independent_jobs(tmp_path):
    """Through the SLURM profile (several jobs at once), each SFT needs only the shared parquet/base_model and
    each PPO only its own SFT: nothing orders the variants' trainings after one another."""
    configfile = experiment_workdir(tmp_path, SWEEP)
    proc = snakemake(tmp_path, configfile, "experiment", "--profile", str(REPO / "slurm"), "--dag", "--config", "experiment=lr-sweep")
    nodes, edges = dag_edges(proc.stdout)
    parents = {n: {nodes[a] for a, b in edges if b == n} for n in nodes}
    sft = [n for n, rule in nodes.items() if rule == "sft"]
    ppo = [n for n, rule in nodes.items() if rule == "ppo"]
    assert len(sft) == 3 and len(ppo) == 6
    assert all(parents[n] == {"base_model", "parquet"} for n in sft)
    assert all(parents[n] == {"sft_model", "parquet"} for n in ppo)
    assert yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())["jobs"] > 1


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    configfile = experiment_workdir(workdir, RUN_SWEEP)
    start = time.monotonic()
    snakemake(workdir, configfile, "experiment", "--config", "experiment=lr-sweep")
    print(f"[finished_sweep] 1 x 2 sweep: {time.monotonic() - start:.0f} s")
    return {"workdir": workdir, "configfile": configfile, "runs": workdir / "runs" / "lr-sweep"}


@pytest.mark.e2e
def test_adding_a_learning_rate_runs_only_what_is_new(finished_sweep, tmp_path):
    workdir, configfile = finished_sweep["workdir"], finished_sweep["configfile"]
    assert planned_jobs(plan(workdir, configfile, "lr-sweep")) == {}  # a finished sweep is a no-op
    grown = tmp_path / "lr-sweep.yaml"  # the same experiment (file stem) with a 2nd learning rate
    grown.write_text(yaml.safe_dump({"grid": {**RUN_SWEEP["grid"], "sft.lr": [*RUN_SWEEP["grid"]["sft.lr"], 3.0e-2]}}, sort_keys=False))
    proc = plan(workdir, configfile, str(grown))
    assert planned_jobs(proc) == {"sft": 1, "sft_model": 1, "ppo": 2, "merged_model": 2, "evaluate": 2, "plots": 2,
                                  "compare": 1, "experiment": 1}
    outputs = re.findall(r"^    output: (\S+)", proc.stdout, re.MULTILINE)
    assert all(o.startswith(("runs/lr-sweep/lr0.03_", "runs/lr-sweep/compare/")) for o in outputs), outputs


@pytest.mark.e2e
def test_each_variant_has_its_own_provenance_chain(finished_sweep):
    from llm_bridge.provenance import chain

    variant = finished_sweep["runs"] / VARIANTS[1]  # kl 0.01: SFT (and what came before) shared with kl 0.001
    stages = chain(variant / "merged_model", variant / "manifests")
    where = {m["rule"]: Path(m["outputs"][0]["path"]).parts[2] for m in stages}
    assert where == {"merged_model": VARIANTS[1], "ppo": VARIANTS[1], "sft_model": VARIANTS[0], "sft": VARIANTS[0],
                     "parquet": VARIANTS[0], "base_model": VARIANTS[0], "raw_data": VARIANTS[0]}
    assert json.loads((variant / "manifests" / "ppo.json").read_text())["config"]["ppo"]["kl_coef"] == 0.01


@pytest.mark.e2e
def test_comparison_report_renders_table_and_curves(finished_sweep, tmp_path):
    dom = rendered_dom(finished_sweep["runs"] / "compare" / "report.html", tmp_path / "profile")
    table = dom.split("<table id=\"compare-table\">", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.DOTALL)
    assert re.findall(r"<th>(.*?)</th>", rows[0]) == ["variant", "ppo.kl_coef", "final SFT loss", "final PPO reward",
                                                      "eval accuracy (95% CI)", "SFT wall s", "PPO wall s"]
    assert sorted(re.match(r"<td>([\w.-]+)", r)[1] for r in rows[1:]) == sorted(VARIANTS)
    assert table.count("★ best") == 1
    curves = dom.split("<div id=\"curves\">", 1)[1]
    assert "<svg" in curves and "SFT loss" in curves and "PPO reward" in curves
    lines = re.findall(r"<g id=\"(sft|ppo)-([\w.-]+)\"", curves)  # one line per distinct SFT, one per variant's PPO
    assert sorted(lines) == sorted([("sft", VARIANTS[0])] + [("ppo", v) for v in VARIANTS])
    report = tmp_path / "report.html"  # the same page in Snakemake's own report
    snakemake(finished_sweep["workdir"], finished_sweep["configfile"], "experiment", "--report", str(report), "--config",
              "experiment=lr-sweep")
    assert "Experiment" in rendered_dom(report, tmp_path / "profile2")
