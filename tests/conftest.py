"""Shared test helpers: the repo root, the real GSM8K beside the checkout, and running the real workflow."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "data" / "gsm8k"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture
def gsm8k_dir() -> Path:
    if not (GSM8K / "train.jsonl").exists():
        pytest.skip(f"real GSM8K not found at {GSM8K}")
    return GSM8K


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def light_ppo(config: dict) -> dict:
    """PPO for the tests of the chain's plumbing (stages, resume, SLURM, sweeps): the default's algorithm and
    learning rates at a small batch, 8 prompts of 1 rollout (about 2.5 s a step on 2 cores against 10 s for the
    default's 32 x 4).
    tests/test_learning.py runs the default's own settings, which are chosen to learn."""
    config["ppo"].update(train_batch_size=8, rollout_n=1, ppo_mini_batch_size=8, ppo_micro_batch_size_per_gpu=8)
    return config


def light_sft(config: dict) -> dict:
    """SFT in float32 for the plumbing tests, through `sft.overrides` as a user would write it; tests/test_learning.py
    keeps the default's bfloat16. Added when bfloat16 on a CPU without bfloat16 instructions (CI's AMD Zen 3) ran in
    torch's reference loop (the small config's SFT stage 97 s against 46 s). llm_bridge.cpu_support now sends
    those products through float32, yet a full .ci/run without this was still 227 s slower (3,304 against 3,077 s;
    the SLURM module's two chains 1,403 against 1,058 s): it stays (docs/benchmarks.md, "The test suite against
    CI's window")."""
    config["sft"]["overrides"] = [*config["sft"]["overrides"], "+engine.mixed_precision.param_dtype=fp32"]
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: float = 3600,
              snakefile: Path = REPO / "Snakefile") -> subprocess.CompletedProcess:
    """Run the real workflow (repo Snakefile) in `workdir` with `configfile`. The timeout only stops a hung run:
    two pytest workers share the machine, so a run can take twice its time on an idle one."""
    cmd = SNAKEMAKE + ["-s", str(snakefile), "--directory", str(workdir), "--configfile", str(configfile),
                       "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def rendered_dom(page: Path, profile_dir: Path) -> str:
    """The DOM of an HTML file as a real headless Chromium renders it (scripts run); skips without Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it when run as root)")
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile_dir}",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120).stdout


STAGE_PROCESSES = ("raylet", "gcs_server", "ray::", "vllm", "VLLM", "sft_trainer", "main_ppo")


def stray_processes(workdir: Path) -> list[str]:
    """Ray, vLLM and trainer processes still alive that were started for runs in `workdir`: each runs there (the
    stage's directory, inherited by every process below it; Ray's and vLLM's workers rename themselves, which
    overwrites their environment but not their working directory). Another test's run may be live at the same
    time (pytest runs two workers: pyproject.toml's addopts), so only this workdir's count."""
    left, workdir = [], workdir.resolve()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        line, cwd = " ".join(proc.info["cmdline"] or []), proc.info["cwd"]
        if cwd and Path(cwd).is_relative_to(workdir) and any(name in line for name in STAGE_PROCESSES):
            left.append(f"{proc.info['pid']} {line}")
    return left


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count (empty when nothing is to be done)."""
    text = proc.stdout + proc.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny base model (real base_model stage code) built once per session."""
    from llm_bridge import base_model, raw_data

    root = tmp_path_factory.mktemp("tiny")
    (root / "raw").mkdir()
    splits = raw_data.synthetic_splits(300, 10, seed=0)
    raw_data.write_jsonl(root / "raw" / "train.jsonl", splits["train"])
    shape = default_config()["model"]["tiny"]
    base_model.main(["--params", '{"model": {"source": "tiny", "tiny": %s}, "seed": 0}' % __import__("json").dumps(shape),
                     "--raw-dir", str(root / "raw"), "--out-dir", str(root / "model")])
    return root / "model"


# The modules whose runs take longest, longest first. With two pytest workers each module goes to one worker
# whole (a module's runs are its fixtures) and the next module to the first worker that needs one, so starting
# with the long ones keeps either worker from finishing alone. test_learning runs the whole embedded default
# (about 23 minutes on an idle 2-core AMD Zen 3, which lacks bfloat16 instructions; 40-45 beside another worker).
LONGEST_FIRST = ("test_learning.py", "test_slurm.py", "test_experiments.py", "test_resume.py", "test_pipeline.py",
                 "test_determinism.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a module's own order is kept


def pytest_xdist_make_scheduler(config, log):
    """xdist's per-file scheduler, but a worker gets its next module only when it is on its last test (a worker
    runs a test once it knows the one after it). xdist's own hands one over as soon as two tests are left: the
    2-test test_learning then took test_experiments into its 45 minutes while the other worker ran out of work."""
    from xdist.scheduler import LoadFileScheduling

    class OnLastTest(LoadFileScheduling):
        def _reschedule(self, node):
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
            elif self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return OnLastTest(config, log)
