"""The pipeline on a real SLURM cluster (tests/slurm/up.sh: two virtual nodes n1, n2 with 1 CPU each, same host),
through the same profile users run: `snakemake --profile slurm ...`.

  (a) the embedded default (small) end to end through sbatch, every job on record, outputs as the local run's;
  (b) SFT across the two nodes: one torchrun per node, c10d rendezvous on the first, one checkpoint of 2 ranks;
  (c) PPO with a Ray cluster over both nodes started inside the job's allocation, and no Ray process afterwards;
  (d) an SFT job requeued (`scontrol requeue`) once it has a checkpoint resumes from it, not from scratch;
  (e) impossible cluster settings (unknown partition, GPUs no node has, missing account) fail before any sbatch.

Skipped, with the reason, when sbatch/sinfo are missing or the cluster is down (CI starts it: scripts/test.sh).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE, default_config, light_ppo, light_sft, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

JOBCOMP = Path("/var/log/slurm/jobcomp.log")
PROFILE = REPO / "slurm"  # absolute: the tests run with --directory <tmp>


def cluster_problem() -> str | None:
    for tool in ("sbatch", "sinfo", "scontrol", "squeue"):
        if shutil.which(tool) is None:
            return f"{tool} not found: no SLURM here (CI installs it and starts the cluster: bash tests/slurm/up.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s: the SLURM controller is down (start it: bash tests/slurm/up.sh)"
    if out.returncode != 0:
        return f"the SLURM cluster is down ({out.stderr.strip()[:200]}); start it: bash tests/slurm/up.sh"
    usable = {line.split()[0] for line in out.stdout.splitlines() if re.search(r" (idle|mix|alloc|comp)$", line)}
    if not {"n1", "n2"} <= usable:
        return f"nodes n1, n2 of the test cluster are not both usable ({out.stdout.strip()}); run bash tests/slurm/up.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


def small_config(run_name: str = "e2e", preset: str = "cpu") -> dict:
    """As tests/test_pipeline.py's small config: 320 train rows, 2 SFT epochs (20 steps), 2 PPO steps."""
    config = default_config()
    config["run_name"], config["preset"] = run_name, preset
    config["data"]["synthetic"] = {"n_train": 320, "n_test": 40}
    light_sft(config)["sft"].update(total_epochs=2, save_freq=5)
    light_ppo(config)["ppo"].update(enabled=True, total_training_steps=2, save_freq=1)
    config["evaluate"].update(n_samples=16, batch_size=16)
    return config


def slurm_cmd(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
                        "--profile", str(PROFILE), *args]


def run_slurm(workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    proc = subprocess.run(slurm_cmd(workdir, configfile, *args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake --profile slurm failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


def submissions(log: str) -> dict[str, list[str]]:
    """rule -> SLURM job ids, from the plugin's 'Job N has been submitted with SLURM jobid X (log: .../rule_R/X.log)'."""
    jobs: dict[str, list[str]] = {}
    for jobid, path in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)", log):
        rule = re.search(r"rule_([A-Za-z_]+)", path).group(1)
        jobs.setdefault(rule, []).append(jobid)
    return jobs


def jobcomp() -> dict[str, list[dict]]:
    """SLURM's own record (JobCompType=jobcomp/filetxt): job id -> one dict per finished/requeued run."""
    records: dict[str, list[dict]] = {}
    if JOBCOMP.exists():
        for line in JOBCOMP.read_text().splitlines():
            kv = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in kv:
                records.setdefault(kv["JobId"], []).append(kv)
    return records


def wait_for_record(jobid: str, state: str = "COMPLETED", timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in jobcomp().get(jobid, []):
            if rec["JobState"] == state:
                return rec
        time.sleep(1)
    raise AssertionError(f"no {state} record of job {jobid} in {JOBCOMP}: {jobcomp().get(jobid)}")


def marked_processes(jobid: str) -> list[str]:
    """Processes of that job's Ray cluster still alive on this machine (the marker every one of them carries),
    and any Ray process started with that job's temp dir."""
    from llm_bridge.ray_cluster import marked_processes as marked

    left = [f"pid {p}" for p in marked(jobid)]
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    left += [line for line in out if f"ray-llmb-{jobid}" in line and "ps -eo" not in line]
    return left


def copy_workdir(src: Path, dst: Path) -> Path:
    """A finished run (outputs, checkpoints, Snakemake's metadata) copied, so a test starts from it."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("slurm_logs", "locks", "incomplete"))
    return dst


# --- (a) the embedded default through sbatch ------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-e2e")
    configfile = write_config(workdir / "config.yaml", small_config())
    start = time.monotonic()
    proc = run_slurm(workdir, configfile, "merged_model")
    log = proc.stdout + proc.stderr
    return {"workdir": workdir, "configfile": configfile, "run": workdir / "runs" / "e2e", "log": log,
            "jobs": submissions(log), "seconds": time.monotonic() - start,
            "run_uuid": re.search(r"SLURM run ID: (\S+)", log).group(1)}


STAGES = {"raw_data", "base_model", "parquet", "sft", "sft_model", "ppo", "merged_model"}


def test_every_job_went_through_sbatch(slurm_run):
    jobs = slurm_run["jobs"]
    assert set(jobs) == STAGES, slurm_run["log"][-3000:]
    assert all(len(ids) == 1 for ids in jobs.values())
    for rule, (jobid,) in jobs.items():
        rec = wait_for_record(jobid)
        assert rec["Name"] == slurm_run["run_uuid"] and rec["WorkDir"] == str(slurm_run["workdir"])
        assert rec["ExitCode"] == "0:0" and rec["NodeCnt"] == "1"
        log = slurm_run["workdir"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{jobid}.log"
        assert log.exists() and f"rule {rule}:" in log.read_text()
    assert "checked against the SLURM cluster" in slurm_run["log"]


def test_job_logs_hold_compact_progress_and_stage_logs_everything(slurm_run):
    """Each training job's SLURM log holds the stage's own lines and its plain progress lines; verl's, Ray's and
    vLLM's output is only in the stage's log file (runs/<run>/logs/<stage>.log)."""
    run = slurm_run["workdir"] / "runs" / "e2e"
    for rule, verl_line in (("sft", "Saved dataloader state"), ("ppo", "TaskRunnerV1")):
        (jobid,) = slurm_run["jobs"][rule]
        slurm_log = (slurm_run["workdir"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{jobid}.log").read_text()
        stage_log = (run / "logs" / f"{rule}.log").read_text()
        assert f"[{rule}] step " in slurm_log and f"[{rule}] done" in slurm_log, slurm_log[-3000:]
        assert verl_line in stage_log and verl_line not in slurm_log


def test_training_jobs_are_requeueable(slurm_run):
    """sft and ppo are submitted with --requeue --open-mode=append (the plugin's slurm_extra), nothing else is
    (the resources each job's SLURM log shows; the test cluster makes every job requeueable anyway: JobRequeue=1)."""
    for rule, (jobid,) in slurm_run["jobs"].items():
        log = (slurm_run["workdir"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{jobid}.log").read_text()
        resources = re.search(r"resources: ([^\n]*)", log).group(1)
        assert ("slurm_extra=--requeue --open-mode=append" in resources) == (rule in ("sft", "ppo")), (rule, resources)
        if rule in ("sft", "ppo"):
            info = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
            assert "Requeue=1" in info, info


def test_outputs_match_the_local_run_in_kind(slurm_run):
    """What tests/test_pipeline.py asserts of the local run of the same config."""
    run = slurm_run["run"]
    assert len((run / "raw_data" / "train.jsonl").read_text().splitlines()) == 320
    sft = json.loads((run / "sft" / "result.json").read_text())
    assert sft["global_step"] == 2 * 320 // 32 and len(sft["metrics"]) == sft["global_step"]
    assert sft["metrics"][-1]["train/loss"] < sft["metrics"][0]["train/loss"] / 2
    ppo = json.loads((run / "ppo" / "result.json").read_text())
    assert ppo["global_step"] == 2 and [s["step"] for s in ppo["metrics"]] == [1, 2]
    assert {"actor", "critic"} <= {p.name for p in (run / "ppo" / "checkpoints" / "global_step_2").iterdir()}
    merged = run / "merged_model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    for stage in STAGES:
        manifest = json.loads((run / "manifests" / f"{stage}.json").read_text())
        assert manifest["rule"] == stage
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(merged), AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("Ava has 3 pens.", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_single_node_ppo_used_its_own_ray_cluster(slurm_run):
    (jobid,) = slurm_run["jobs"]["ppo"]
    log = (slurm_run["run"] / "logs" / "ppo.log").read_text()
    assert f"[ray-cluster] job {jobid}: head on" in log and "all 1 nodes joined" in log and "Ray stopped" in log
    assert marked_processes(jobid) == []


def test_rerun_through_slurm_is_a_noop(slurm_run):
    """What the jobs recorded on the compute nodes (params, code, inputs) is what the submit host expects. (Not
    the mtime trigger: in a shared checkout the stage modules may be edited while this module runs.)"""
    proc = run_slurm(slurm_run["workdir"], slurm_run["configfile"], "merged_model", "--dry-run",
                     "--rerun-triggers", "params", "input", "code", "software-env")
    assert "Nothing to be done" in proc.stdout + proc.stderr


# --- (b), (c) two nodes: SFT with torchrun per node, PPO with a Ray cluster over both ---------------------------
@pytest.fixture(scope="module")
def two_node_run(slurm_run, tmp_path_factory):
    """From (a)'s finished run, the cpu2node preset: sft (2 nodes), sft_model, ppo (2 nodes) rerun."""
    workdir = copy_workdir(slurm_run["workdir"], tmp_path_factory.mktemp("slurm-2node") / "w")
    configfile = write_config(workdir / "config.yaml", small_config(preset="cpu2node"))
    start = time.monotonic()
    proc = run_slurm(workdir, configfile, "ppo")
    log = proc.stdout + proc.stderr
    return {"workdir": workdir, "run": workdir / "runs" / "e2e", "log": log, "jobs": submissions(log),
            "seconds": time.monotonic() - start}


def test_sft_across_two_nodes(two_node_run):
    jobs, run = two_node_run["jobs"], two_node_run["run"]
    assert set(jobs) == {"sft", "sft_model", "ppo"}, two_node_run["log"][-3000:]
    (jobid,) = jobs["sft"]
    rec = wait_for_record(jobid)
    assert rec["NodeCnt"] == "2" and rec["NodeList"] == "n[1-2]"
    # each node's whole output goes to its own log: node 0 to logs/sft.log, node k to logs/sft-node<k>.log
    logs = [(run / "logs" / name).read_text() for name in ("sft.log", "sft-node1.log")]
    for node, log in enumerate(logs):
        assert f"[sft] node {node} of 2: starting" in log, log[:3000]
        assert f"is_host={1 - node}" in log
    # world size 2: torch ranks 0 and 1 each saved their shard, one on each node (rank order is torch's choice)
    saved = [set(re.findall(r"\[Rank (\d)\] Saved model to", log)) for log in logs]
    assert all(len(ranks) == 1 for ranks in saved) and set().union(*saved) == {"0", "1"}, saved
    result = json.loads((run / "sft" / "result.json").read_text())
    assert result["global_step"] == 20 and len(result["metrics"]) == 20
    steps = sorted(p.name for p in (run / "sft" / "checkpoints").glob("global_step_*"))
    shards = {p.name for p in Path(result["checkpoint"]).iterdir()}
    assert {"model_world_size_2_rank_0.pt", "model_world_size_2_rank_1.pt"} <= shards, shards  # both ranks saved
    assert f"global_step_{result['global_step']}" in steps
    assert (run / "sft" / "model" / "model.safetensors").exists()  # the 2-rank checkpoint merges


def test_ppo_ray_cluster_across_two_nodes_and_gone_after(two_node_run):
    (jobid,) = two_node_run["jobs"]["ppo"]
    rec = wait_for_record(jobid)
    assert rec["NodeCnt"] == "2" and rec["NodeList"] == "n[1-2]"
    log = (two_node_run["run"] / "logs" / "ppo.log").read_text()
    assert "[ray-cluster] all 2 nodes joined: n1, n2" in log, log[-3000:]
    assert "+ray_kwargs.ray_init.address=" in log
    assert "Ray stopped on n1,n2" in log
    # one Ray "GPU" per node and verl's 2 workers: one worker process on each node
    assert len(set(re.findall(r"\(WorkerDict pid=(\d+)", log))) == 2
    ppo = json.loads((two_node_run["run"] / "ppo" / "result.json").read_text())
    assert ppo["global_step"] == 2 and [s["step"] for s in ppo["metrics"]] == [1, 2]
    assert marked_processes(jobid) == []
    assert not Path(f"/tmp/ray-llmb-{jobid}").exists()


# --- (d) preemption: a requeued SFT job resumes from its checkpoint ------------------------------------------
def test_requeued_sft_resumes_from_its_checkpoint(slurm_run, tmp_path_factory):
    workdir = copy_workdir(slurm_run["workdir"], tmp_path_factory.mktemp("slurm-requeue") / "w")
    run = workdir / "runs" / "e2e"
    shutil.rmtree(run / "sft")
    (run / "manifests" / "sft.json").unlink()
    out = (workdir / "snakemake.out").open("w")
    proc = subprocess.Popen(slurm_cmd(workdir, slurm_run["configfile"], "sft"), stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    tracker = run / "sft" / "checkpoints" / "latest_checkpointed_iteration.txt"
    try:
        deadline = time.monotonic() + 600
        while not tracker.exists():
            assert proc.poll() is None, (workdir / "snakemake.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "no SFT checkpoint after 600 s"
            time.sleep(0.5)
        first = int(tracker.read_text())
        (jobid,) = submissions((workdir / "snakemake.out").read_text())["sft"]
        subprocess.run(["scontrol", "requeue", jobid], check=True, capture_output=True, text=True)
        requeued_at = time.monotonic()
        assert proc.wait(timeout=900) == 0, (workdir / "snakemake.out").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        out.close()
    wait_for_record(jobid, "COMPLETED")
    runs = jobcomp()[jobid]  # jobcomp logs the requeue itself as a (PENDING) record of the same job id
    assert len(runs) == 2 and runs[0]["JobState"] != "COMPLETED", runs
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
    assert time.monotonic() - requeued_at > 20  # SLURM held it (~30 s) and then ran it again, same job id
    slurm_log = (workdir / ".snakemake" / "slurm_logs" / "rule_sft" / f"{jobid}.log").read_text()
    assert slurm_log.count("[sft] starting") == 1, "the restart must append to the SLURM log (--open-mode=append)"
    assert "[sft] resuming from" in slurm_log
    result = json.loads((run / "sft" / "result.json").read_text())
    assert result["global_step"] == 20 and [s["step"] for s in result["metrics"]] == list(range(1, 21))
    assert result["resumed_from_step"] >= first
    # one metrics file per attempt: the second attempt started after the checkpoint, not at step 1
    attempts = sorted((run / "sft" / "checkpoints").glob("metrics-*.jsonl"))
    assert len(attempts) == 2
    second = [json.loads(line)["step"] for line in attempts[1].read_text().splitlines() if line.strip()]
    assert second and min(second) > first >= 5, (first, second)
    assert (workdir / "snakemake.out").read_text().count("has been submitted") == 1  # SLURM restarted the same job


# --- (e) impossible cluster settings fail before any submission ------------------------------------------------
@pytest.mark.parametrize("setting,message", [
    ("sft:slurm_partition=gpu-a100", r"rule sft: SLURM partition 'gpu-a100' does not exist on this cluster \(partitions: cpu \(default\), debug, acct\)"),
    ("ppo:gpu=4", r"rule ppo on partition cpu: asks for 4 GPU\(s\) per node, but no node of the partition has more than 0"),
    ("merged_model:slurm_partition=acct", r"rule merged_model on partition acct: the partition only takes jobs charged to account\(s\) llmb and no account is given; set slurm.account"),
    ("sft:runtime=600 sft:slurm_partition=debug", r"asks for 600 min, the partition's time limit is 10 min"),
])
def test_bad_cluster_config_fails_before_submission(tmp_path, setting, message):
    configfile = write_config(tmp_path / "config.yaml", small_config())
    before = set(jobcomp())
    queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    proc = run_slurm(tmp_path, configfile, "merged_model", "--set-resources", *setting.split(), check=False, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nothing was submitted" in text and re.search(message, text), text[-3000:]
    assert "config/presets/cpu.yaml" in text  # where to fix it
    assert "has been submitted" not in text and not (tmp_path / "runs").exists()
    assert not (tmp_path / ".snakemake" / "slurm_logs").exists() or not any((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) - set(queued) == set() and set(jobcomp()) == before


def test_multi_node_preset_resources(tmp_path):
    """The SLURM resources the rules get (dry run, no cluster needed): nodes/tasks/mpi and requeue for sft and
    ppo of a 2-node preset, GPUs per node as --gres for several nodes, never one task per GPU."""
    configfile = write_config(tmp_path / "config.yaml", small_config(preset="cpu2node"))
    # `--quiet host` brings back the per-job blocks that the workflow profile's `quiet: [rules, host]` hides
    out = run_slurm(tmp_path, configfile, "ppo", "--dry-run", "--printshellcmds", "--quiet", "host", timeout=120).stdout
    sft = re.search(r"rule sft:.*?resources: ([^\n]*)", out, re.S).group(1)
    assert "nodes=2, tasks=2, mpi=srun, slurm_extra=--requeue --open-mode=append" in sft
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=1 --kill-on-bad-exit=1 --label python -m llm_bridge.sft" in out
    raw = re.search(r"rule raw_data:.*?resources: ([^\n]*)", out, re.S).group(1)
    assert "mem_mb=3000" in raw and "mpi" not in raw and "requeue" not in raw  # the preset's default, for every rule
    gpu_presets = [p.stem for p in (REPO / "config" / "presets").glob("*.yaml")
                   if p.stem != "schema" and "nnodes: 2" in p.read_text() and "gpus_per_node: 0" not in p.read_text()]
    if gpu_presets:
        config = small_config(preset=gpu_presets[0])
        configfile = write_config(tmp_path / "gpu.yaml", config)
        proc = run_slurm(tmp_path, configfile, "ppo", "--dry-run", "--quiet", "host", check=False, timeout=120)
        if proc.returncode == 0:
            sft = re.search(r"rule sft:.*?resources: ([^\n]*)", proc.stdout, re.S).group(1)
            assert "mpi=srun" in sft and "tasks_per_gpu=0" in sft and re.search(r"gres=gpu:(\w+:)?\d+", sft)
            assert not re.search(r"\bgpu=\d", sft)


def test_ray_ports_do_not_clash():
    """Ports of a job's Ray nodes are disjoint (nodes may share a host), inside 20000-29499 (below the ephemeral
    range, clear of Ray's defaults and of torchrun's rendezvous ports), and consecutive job ids get disjoint sets."""
    from dataclasses import astuple

    from llm_bridge.ray_cluster import node_ports

    def ports(job, nnodes):
        nodes = [node_ports(job, i, nnodes) for i in range(nnodes)]
        return [set(astuple(p)[:-2]) | set(range(p.min_worker, p.max_worker + 1)) for p in nodes]

    for nnodes in (1, 2, 4, 16):
        slots = (29500 - 20000) // (250 * nnodes)
        for job in range(1, 200):
            nodes = ports(job, nnodes)
            assert sum(len(p) for p in nodes) == len(set().union(*nodes)) == 250 * nnodes - 2 * nnodes
            assert min(min(p) for p in nodes) >= 20000 and max(max(p) for p in nodes) < 29500
            if slots > 1:
                assert not set().union(*nodes) & set().union(*ports(job + 1, nnodes))
