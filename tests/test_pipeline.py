"""End to end: the real Snakemake workflow with real verl (SFT and PPO on CPU) on a tiny config.

One full run (module fixture), then what the design promises about reruns: a finished run is a no-op, a changed
SFT learning rate reruns SFT and everything after it, a changed eval setting reruns only `evaluate`, a changed
stage module reruns that stage and what follows.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from conftest import REPO, default_config, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.e2e

AFTER_SFT = {"sft", "sft_model", "ppo", "merged_model", "evaluate", "all"}


def small_config(run_name: str = "e2e") -> dict:
    config = default_config()
    config["run_name"] = run_name
    config["data"]["synthetic"] = {"n_train": 320, "n_test": 40}
    config["sft"].update(total_epochs=2, save_freq=5)
    config["ppo"].update(enabled=True, total_training_steps=2, save_freq=1)
    config["evaluate"].update(n_samples=16, batch_size=16)
    return config


def stray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if any(name in line for name in ("raylet", "gcs_server", "ray::", "vllm", "sft_trainer", "main_ppo"))
            and "ps -eo" not in line]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    configfile = write_config(workdir / "config.yaml", small_config())
    start = time.monotonic()
    proc = snakemake(workdir, configfile, "all")
    return {"workdir": workdir, "run": workdir / "runs" / "e2e", "configfile": configfile, "log": proc.stdout + proc.stderr,
            "seconds": time.monotonic() - start}


def test_every_stage_output_exists_and_loads(finished_run):
    run = finished_run["run"]
    assert len((run / "raw_data" / "train.jsonl").read_text().splitlines()) == 320
    assert pq.read_table(run / "parquet" / "train.parquet").num_rows == 320
    assert pq.read_table(run / "parquet" / "sft_test.parquet").num_rows == 40
    sft = json.loads((run / "sft" / "result.json").read_text())
    assert sft["global_step"] == 2 * 320 // 32
    assert (run / "sft" / "checkpoints" / f"global_step_{sft['global_step']}").is_dir()
    losses = [s["train/loss"] for s in sft["metrics"]]
    assert len(losses) == sft["global_step"] and losses[-1] < losses[0] / 2  # the tiny model learns


def test_ppo_checkpoint_reward_and_merge(finished_run):
    run = finished_run["run"]
    ppo = json.loads((run / "ppo" / "result.json").read_text())
    assert ppo["global_step"] == 2
    checkpoint = run / "ppo" / "checkpoints" / "global_step_2"
    assert (checkpoint / "actor").is_dir() and (checkpoint / "critic").is_dir()
    assert (run / "ppo" / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert [s["step"] for s in ppo["metrics"]] == [1, 2]
    for step in ppo["metrics"]:  # reward, and verl's own timing split, logged for every step
        assert 0.0 <= step["critic/score/mean"] <= 1.0
        assert {"timing_s/gen", "timing_s/old_log_prob", "timing_s/values", "timing_s/update_actor"} <= set(step)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = run / "merged_model"
    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("Ava has 3 pens.", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert "[merge]" in finished_run["log"] and "generation check" in finished_run["log"]


def test_eval_has_all_three_models(finished_run):
    results = json.loads((finished_run["run"] / "evaluate" / "eval.json").read_text())
    assert list(results["models"]) == ["base", "sft", "ppo"]
    for row in results["models"].values():
        assert row["n"] == 16 and 0.0 <= row["accuracy"] <= 1.0
    assert "| ppo |" in (finished_run["run"] / "evaluate" / "eval.md").read_text()


def test_no_ray_or_vllm_process_survives(finished_run):
    assert stray_processes() == []


def test_second_run_is_a_noop(finished_run):
    proc = snakemake(finished_run["workdir"], finished_run["configfile"], "all", "--dry-run")
    assert planned_jobs(proc) == {}
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_sft_lr_reruns_exactly_sft_and_after(finished_run):
    config = small_config()
    config["sft"]["lr"] = 1e-3
    changed = write_config(finished_run["workdir"] / "lr.yaml", config)
    assert set(planned_jobs(snakemake(finished_run["workdir"], changed, "all", "--dry-run"))) == AFTER_SFT


def test_changed_eval_setting_reruns_only_evaluate(finished_run):
    run = finished_run["run"]
    config = small_config()
    config["evaluate"]["n_samples"] = 8
    changed = write_config(finished_run["workdir"] / "eval.yaml", config)
    assert set(planned_jobs(snakemake(finished_run["workdir"], changed, "all", "--dry-run"))) == {"evaluate", "all"}
    before = {p: p.stat().st_mtime_ns for p in (run / "sft" / "result.json", run / "ppo" / "result.json", run / "parquet" / "train.parquet")}
    snakemake(finished_run["workdir"], changed, "all")
    assert json.loads((run / "evaluate" / "eval.json").read_text())["models"]["sft"]["n"] == 8
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_changed_stage_code_reruns_that_stage_and_after(finished_run):
    """A stage module is an input of its rule: an edit (here: a newer modification time) of parquet.py
    plans parquet and everything downstream, and nothing upstream."""
    module = REPO / "src" / "llm_bridge" / "parquet.py"
    stat = module.stat()
    try:
        os.utime(module)
        proc = snakemake(finished_run["workdir"], finished_run["configfile"], "all", "--dry-run")
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert set(planned_jobs(proc)) == {"parquet"} | AFTER_SFT


def test_provenance_chains_back_to_raw_data(finished_run):
    run = finished_run["run"]
    manifest = json.loads((run / "manifests" / "merged_model.json").read_text())
    assert manifest["rule"] == "merged_model"
    assert {"verl", "torch", "transformers"} <= set(manifest["versions"])
    assert "requirements/lock-cpu.txt" in manifest["locks"]
    from llm_bridge.provenance import chain, sha256_path

    assert manifest["outputs"][0]["sha256"] == sha256_path(run / "merged_model")
    rules = [m["rule"] for m in chain(run / "merged_model", run / "manifests")]
    assert rules[0] == "merged_model" and {"ppo", "sft_model", "sft", "parquet", "base_model", "raw_data"} <= set(rules)
    out = subprocess.run(["llm-bridge", "provenance", str(run / "merged_model")], capture_output=True, text=True, check=True).stdout
    assert "raw_data" in out and "merged_model" in out
