"""Kill and resume, for real: SIGKILL / SIGTERM in the middle of verl training, then the next `snakemake`
resumes from verl's latest complete checkpoint (not step 0) and finishes; atomic outputs never look finished
when killed mid-write."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE, default_config, light_ppo, light_sft, snakemake, stray_processes, write_config
from llm_bridge import metrics

pytestmark = pytest.mark.e2e


def resume_config() -> dict:
    config = default_config()
    config["run_name"] = "resume"
    config["data"]["synthetic"] = {"n_train": 640, "n_test": 32}
    # 20 steps an epoch, 2 epochs, a checkpoint every 10 steps: one mid-epoch (10), one at the epoch's end (20)
    light_sft(config)["sft"].update(total_epochs=2, save_freq=10, train_batch_size=32, micro_batch_size_per_gpu=32)
    light_ppo(config)["ppo"].update(enabled=True, total_training_steps=6, save_freq=1)
    return config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("resume")
    configfile = write_config(workdir / "config.yaml", resume_config())
    snakemake(workdir, configfile, "parquet", "base_model")
    return workdir, configfile


def tracker_step(ckpt_dir: Path) -> int:
    try:
        return int((ckpt_dir / "latest_checkpointed_iteration.txt").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def logged_step(ckpt_dir: Path) -> int:
    """The last step whose metrics verl's file logger has written (the jsonl files beside the checkpoints)."""
    return max((m["step"] for m in metrics.collect(ckpt_dir)), default=0)


def start(workdir: Path, configfile: Path, target: str) -> subprocess.Popen:
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2", target]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_after_checkpoint(proc: subprocess.Popen, ckpt_dir: Path, sig: int, timeout: float = 600, at_step: int = 1) -> int:
    """Wait until verl has recorded a checkpoint (of step `at_step` or later) and logged that step's metrics, then
    signal the whole process tree (snakemake and below). verl 0.9.1's PPO loop saves the checkpoint, then syncs the
    weights to vLLM, then logs the step: a kill in between loses that step's metrics record (the run resumes after
    it), so the kill waits for the record the test then expects to find kept."""
    deadline = time.monotonic() + timeout
    while (step := tracker_step(ckpt_dir)) < at_step or logged_step(ckpt_dir) < step:
        assert proc.poll() is None, "training finished or failed before the checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.1)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    return step


def rerun(workdir: Path, configfile: Path, target: str, sig: int) -> None:
    """What a user does next. Snakemake releases its lock on SIGTERM; after a SIGKILL of Snakemake itself (a dead
    login node) the lock stays, and `--unlock` is Snakemake's documented way to clear it. (A killed SLURM job
    does not leave this: the Snakemake that holds the lock is not inside the job.)"""
    if sig == signal.SIGKILL:
        snakemake(workdir, configfile, target, "--unlock")
    snakemake(workdir, configfile, target)


def assert_resumed(run: Path, stage: str, killed_at: int, expected_final: int) -> None:
    assert "[launch] settings changed" not in (run / "logs" / f"{stage}.log").read_text()
    result = json.loads((run / stage / "result.json").read_text())
    assert result["global_step"] == expected_final
    assert result["resumed_from_step"] >= killed_at >= 1
    steps = [m["step"] for m in result["metrics"]]
    assert steps[0] == 1 and steps[-1] == expected_final  # the steps logged before the kill are kept
    # verl's per-step log of the resumed attempt starts after the checkpoint, not at step 0
    attempts = sorted((run / stage / "checkpoints").glob("metrics-*.jsonl"))
    assert len(attempts) == 2
    resumed_steps = [json.loads(line)["step"] for line in attempts[-1].read_text().splitlines() if line.strip()]
    # every step after the checkpoint, none skipped (a lost epoch); validation adds a second record of its step
    assert resumed_steps[0] == result["resumed_from_step"] + 1
    assert sorted(set(resumed_steps)) == list(range(result["resumed_from_step"] + 1, expected_final + 1))


@pytest.mark.parametrize("sig, at_step", [(signal.SIGKILL, 10), (signal.SIGTERM, 20)], ids=["SIGKILL-mid-epoch", "SIGTERM-end-of-epoch"])
def test_sft_resumes_after_kill(prepared, sig, at_step):
    """Mid-epoch, and just after the checkpoint at the end of the first epoch (where verl 0.9.1 alone would skip
    the whole second epoch on resume and stop at step 20: llm_bridge.verl_fixes)."""
    workdir, configfile = prepared
    run = workdir / "runs" / "resume"
    subprocess.run(["rm", "-rf", str(run / "sft")], check=True)
    killed_at = kill_after_checkpoint(start(workdir, configfile, "sft"), run / "sft" / "checkpoints", sig, at_step=at_step)
    assert not (run / "sft" / "result.json").exists()
    rerun(workdir, configfile, "sft", sig)
    assert_resumed(run, "sft", killed_at, expected_final=2 * 640 // 32)
    result = json.loads((run / "sft" / "result.json").read_text())
    assert result["resumed_from_step"] == at_step  # the kill came before the next checkpoint


def test_ppo_resumes_after_kill(prepared):
    workdir, configfile = prepared
    run = workdir / "runs" / "resume"
    snakemake(workdir, configfile, "sft_model")
    killed_at = kill_after_checkpoint(start(workdir, configfile, "ppo"), run / "ppo" / "checkpoints", signal.SIGKILL)
    rerun(workdir, configfile, "ppo", signal.SIGKILL)
    assert_resumed(run, "ppo", killed_at, expected_final=6)
    assert stray_processes(workdir) == []


def test_merge_killed_mid_write_leaves_nothing_that_looks_finished(prepared, tmp_path):
    workdir, configfile = prepared
    run = workdir / "runs" / "resume"
    if not (run / "sft" / "result.json").exists():
        snakemake(workdir, configfile, "sft")
    out = tmp_path / "merged"
    for delay in (1.0, 3.0, 5.0, 7.0):
        proc = subprocess.Popen([sys.executable, "-m", "llm_bridge.merge", "--result", str(run / "sft" / "result.json"),
                                 "--out-dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # either nothing, or (killed after the final rename) the complete, loadable model
            if out.exists():
                from transformers import AutoModelForCausalLM

                assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
                AutoModelForCausalLM.from_pretrained(out)
                break
        else:
            assert proc.returncode == 0 and (out / "model.safetensors").exists()
            break
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "merged"]
    assert all(name.endswith(".partial") for name in leftovers)  # temp folders of killed writers, never the output


def test_second_snakemake_on_the_same_run_is_refused(prepared):
    workdir, configfile = prepared
    run = workdir / "runs" / "resume"
    subprocess.run(["rm", "-rf", str(run / "sft")], check=True)
    first = start(workdir, configfile, "sft")
    try:
        deadline = time.monotonic() + 120
        while not (workdir / ".snakemake" / "locks").exists() or not any((workdir / ".snakemake" / "locks").iterdir()):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        second = snakemake(workdir, configfile, "sft", check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=120)
    assert not (run / "sft" / "result.json").exists()  # the refused run wrote nothing; the stopped one finished nothing
