"""Run a training command (torchrun / main_ppo) as a child process: environment, logging, stall watchdog,
clean stop on every exit path, and a work folder that is resumed only when its settings are unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from llm_bridge import console
from llm_bridge.errors import InputError, StageError


def has_gpu() -> bool:
    """Asked of torch in a short-lived process: the launcher waits beside the training for hours and should not
    hold torch (about 300 MB) in memory for this one question."""
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def cpu_env(procs_per_node: int = 1) -> dict[str, str]:
    """Environment that makes verl load llm_bridge.cpu_support (in the launcher's children, every torchrun rank
    and every Ray worker) and pick the CPU platform."""
    cpus = int(os.environ.get("SLURM_CPUS_ON_NODE", 0)) or len(os.sched_getaffinity(0))
    return {
        # torchrun would pin each rank to 1 thread; share the node's cores among the ranks instead.
        "OMP_NUM_THREADS": str(max(1, cpus // procs_per_node)),
        "VERL_USE_EXTERNAL_MODULES": "llm_bridge.cpu_support",
        "VERL_PLATFORM": "cpu",
        # verl registers its FSDP engine for cuda/npu only; this makes EngineRegistry pick it on CPU too.
        "VERL_ENGINE_DEVICE": "cuda",
        "TOKENIZERS_PARALLELISM": "false",
    }


def child_env(extra: dict[str, str] | None = None, procs_per_node: int = 1, verl_modules: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for verl: CPU support when there is no GPU, plus `verl_modules` for verl to import in
    every process it starts (beside any a preset names); secrets stay in the environment, never argv."""
    env = dict(os.environ)
    layers = [os.environ, cpu_env(procs_per_node) if not has_gpu() else {}, extra or {}]
    for layer in layers[1:]:
        env.update(layer)
    # verl's plugin modules add up, in this order: CPU support (it registers the platform every later import of
    # verl needs), the preset's, ours, then the caller's own (e.g. llm_bridge.phase_profile)
    modules = [m for layer in [*layers[1:], {"VERL_USE_EXTERNAL_MODULES": ",".join(verl_modules)}, layers[0]]
               for m in layer.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if modules:
        env["VERL_USE_EXTERNAL_MODULES"] = ",".join(dict.fromkeys(modules))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def loggers(logging: dict, out_dir: Path) -> tuple[str, dict[str, str]]:
    """verl's trainer.logger list and the environment for it. W&B runs offline unless asked (no account needed);
    its key, like every secret, stays in the environment and never reaches argv, config or logs."""
    names, env = ["console", "file"], {}
    if logging.get("wandb", "offline") != "disabled":
        names.append("wandb")
        env = {"WANDB_MODE": logging.get("wandb", "offline"), "WANDB_DIR": str(out_dir.resolve()), "WANDB_SILENT": "true"}
    if logging.get("tensorboard"):
        names.append("tensorboard")
        env["TENSORBOARD_DIR"] = str((out_dir / "tensorboard").resolve())
    return f"trainer.logger=[{','.join(names)}]", env


def attention_fallback(overrides: list[str], prefixes: list[str]) -> list[str]:
    """On GPUs verl asks for flash-attn (its default, fastest with padding removal). Where flash-attn is not
    installed, ask for SDPA instead, unless the preset's overrides name an attention implementation."""
    import importlib.util

    if any("attn_implementation=" in o for o in overrides) or importlib.util.find_spec("flash_attn"):
        return []
    return [f"+{p}model.override_config.attn_implementation=sdpa" for p in prefixes]


def input_stamp(data: list[Path], code: list[Path]) -> dict[str, object]:
    """What a stage's checkpoints were trained from, for its settings stamp: each data input (a model folder, a
    parquet file) by its files' sizes and modification times (a model is gigabytes: no hashing), each code file by
    its content (a checkout touches files it does not change). Snakemake reruns a stage when an input changed; the
    rerun must then train afresh, not resume the checkpoints of the old SFT model or data, which keep their path."""
    missing = [str(path) for path in data if not path.exists()]
    if missing:  # a module run on its own with a wrong path: say which, before anything starts
        what = "input is" if len(missing) == 1 else "inputs are"
        raise InputError(f"the stage's {what} missing: {', '.join(missing)}. Run the stage that makes each first "
                         "(the pipeline's targets: `snakemake --list-target-rules`), or pass the right path")
    stamp: dict[str, object] = {}
    for path in data:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp[str(path)] = {str(f.relative_to(path)) if f != path else f.name: [(st := f.stat()).st_size, st.st_mtime_ns]
                            for f in files}
    for path in code:
        stamp[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return stamp


def what_changed(old: dict, new: dict) -> str:
    """Which settings (or inputs, by path) differ between two stamps, for the "starting fresh" line."""
    keys = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    if keys == ["inputs"] and isinstance(old.get("inputs"), dict) and isinstance(new.get("inputs"), dict):
        paths = [k for k in sorted(old["inputs"].keys() | new["inputs"].keys()) if old["inputs"].get(k) != new["inputs"].get(k)]
        return f"the inputs changed ({', '.join(paths)})"
    return f"the settings changed ({', '.join(keys)})"


def prepare_work_dir(work_dir: Path, settings: dict) -> int:
    """Keep `work_dir` (and its checkpoints) only if it was made with the same settings; returns the step verl
    will resume from (0: from scratch). A changed learning rate, or a retrained SFT model (the `inputs` of
    input_stamp), must not resume from checkpoints of the old one."""
    stamp = work_dir / "settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1)
    if work_dir.exists():
        old = stamp.read_text() if stamp.exists() else None
        if old == text:
            repair_tracker(work_dir)
            return recorded_step(work_dir)
        try:
            reason = what_changed(json.loads(old), json.loads(text)) if old else "the settings changed (no stamp)"
        except ValueError:
            reason = "the settings changed (an unreadable stamp)"
        print(f"[launch] {reason} since {work_dir} was started: starting fresh", flush=True)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    stamp.write_text(text)
    return 0


def wait_for_work_dir(work_dir: Path, settings: dict, timeout: float) -> int:
    """The other nodes of a multi-node stage: wait until the first node has prepared `work_dir` for these
    settings (prepare_work_dir), then return the step verl will resume from (0: from scratch)."""
    stamp = work_dir / "settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1)
    deadline = time.monotonic() + timeout
    while not (stamp.exists() and stamp.read_text() == text):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first node did not prepare {work_dir} within {timeout:.0f} s (no {stamp} with these settings)")
        time.sleep(0.5)
    return recorded_step(work_dir)


def recorded_step(work_dir: Path) -> int:
    """The step verl's tracker names (what resume_mode=auto resumes from); 0 when there is none."""
    tracker = work_dir / "latest_checkpointed_iteration.txt"
    return int(tracker.read_text().strip()) if tracker.exists() else 0


def repair_tracker(ckpt_dir: Path) -> None:
    """verl's PPO trainer writes latest_checkpointed_iteration.txt in place (SFT's is atomic): a kill during that
    write leaves it empty, and a kill during a checkpoint leaves a newer half-written global_step_N. Resume only
    from a step the tracker names and that exists; if the tracker is unreadable, fall back to the newest step
    that has everything a checkpoint holds, and say so."""
    tracker = ckpt_dir / "latest_checkpointed_iteration.txt"
    if not tracker.exists():
        return
    text = tracker.read_text().strip()
    if text.isdigit() and (ckpt_dir / f"global_step_{text}").is_dir():
        return
    complete = sorted((int(p.name.split("_")[-1]) for p in ckpt_dir.glob("global_step_*") if checkpoint_complete(p)), reverse=True)
    if complete:
        print(f"[launch] {tracker} was unreadable ({text!r}): resuming from global_step_{complete[0]}", flush=True)
        tmp = tracker.with_suffix(".tmp")
        tmp.write_text(str(complete[0]))
        os.replace(tmp, tracker)
    else:
        print(f"[launch] {tracker} was unreadable ({text!r}) and no complete checkpoint exists: starting over", flush=True)
        tracker.unlink()


def checkpoint_complete(step_dir: Path) -> bool:
    """All parts verl writes for a step: model/optimizer/extra shards (SFT), per role for PPO (actor, critic)."""
    roles = [step_dir / r for r in ("actor", "critic") if (step_dir / r).is_dir()] or [step_dir]
    return all(any(r.glob("model_world_size_*")) and any(r.glob("optim_world_size_*")) and any(r.glob("extra_state_world_size_*"))
               for r in roles)


def write_result(stage: str, out_dir: Path, work_dir: Path, resume_step: int) -> tuple[Path, list[dict]]:
    """The stage's output, written last and atomically: the finished checkpoint and verl's per-step metrics."""
    from llm_bridge import atomic, metrics

    checkpoint = latest_checkpoint(work_dir)
    steps = metrics.collect(work_dir)
    atomic.write_json(out_dir / "result.json", {
        "stage": stage, "checkpoint": str(checkpoint.resolve()), "global_step": int(checkpoint.name.split("_")[-1]),
        "resumed_from_step": resume_step, "metrics": steps,
    })
    return checkpoint, steps


def planned_steps(settings: dict, train_parquet: Path) -> int:
    """The steps verl will run (the total a progress bar shows): trainer.total_training_steps when a setting or an
    override sets it (the last one wins, as in hydra), else epochs x full batches of the training file (its row
    count read from the parquet footer; nothing is loaded)."""
    import pyarrow.parquet as pq

    steps = settings.get("total_training_steps")
    for override in settings.get("overrides", []):
        if override.lstrip("+").startswith("trainer.total_training_steps="):
            steps = int(override.split("=", 1)[1])
    if steps:
        return steps
    return settings["total_epochs"] * (pq.ParquetFile(train_parquet).metadata.num_rows // settings["train_batch_size"])


def latest_checkpoint(ckpt_dir: Path) -> Path:
    """The step verl recorded as complete (latest_checkpointed_iteration.txt); never a guessed global_step_N."""
    marker = ckpt_dir / "latest_checkpointed_iteration.txt"
    if not marker.exists():
        raise InputError(f"{ckpt_dir}: no latest_checkpointed_iteration.txt, so no complete checkpoint. Rerun the stage.")
    step = int(marker.read_text().strip())
    path = ckpt_dir / f"global_step_{step}"
    if not path.is_dir():
        raise InputError(f"{marker} names step {step}, but {path} is missing. Rerun the stage.")
    return path


def run(cmd: list[str], env: dict[str, str], log_path: Path, stall_timeout: float, what: str,
        progress: "console.StageProgress | None" = None) -> None:
    """Run `cmd` with its output going to `log_path` only (also to the terminal with logging.console: full) while
    `progress` shows the steps. If it prints nothing for `stall_timeout` seconds it is stopped and the error says
    what it was last doing. SIGTERM (SLURM preemption) and Ctrl-C are passed on, and the whole process group is
    killed on the way out so no Ray or vLLM process survives. On failure: the log's tail and one sentence."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    echo = console.console_mode() == "full"
    modules = " ".join(f"-m {cmd[i + 1]}" for i, arg in enumerate(cmd[:-1]) if arg == "-m")
    print(f"[launch] {what}: python {modules} ... (full command and output in {log_path})", flush=True)
    last = {"time": time.monotonic()}
    with log_path.open("a") as log:
        since = log.tell()
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True, preexec_fn=die_with_parent)

        def pump() -> None:
            for line in proc.stdout:
                if echo:
                    sys.__stdout__.write(line)
                log.write(line)
                last["time"] = time.monotonic()
                if progress is not None:
                    progress.saw(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()

        def on_signal(signum, _frame):
            stop_group(proc)
            raise SystemExit(128 + signum)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        stalled = False
        try:
            while proc.poll() is None:
                if time.monotonic() - last["time"] > stall_timeout:
                    stalled = True
                    break
                if progress is not None:
                    progress.update()
                time.sleep(1)
        finally:
            stop_group(proc)
            reader.join(timeout=10)
            if progress is not None:
                progress.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if stalled:
        raise StageError(console.failure(log_path, since, what, f"made no progress for {stall_timeout:.0f} s and was stopped; last output"))
    if proc.returncode != 0:
        raise StageError(console.failure(log_path, since, what, f"failed (exit {proc.returncode})"))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies. The training child runs in its own session
    (so a stall or a signal can stop all of it); without this, a SIGKILL of the launcher (or of Snakemake's whole
    process group) would leave verl training on as an orphan, racing the rerun that resumes its checkpoints.
    Ray's own processes already share the fate of the driver; torchrun's ranks get this from cpu_support."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: nothing to ask for
    if os.getppid() == 1:  # the parent was already gone before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """Every live process of session `sid`. Ray puts each of its workers in a process group of its own (inside
    the session), so killing the child's process group alone leaves them running for a while."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop the child and everything it started in its session (torchrun ranks, Ray and its workers, vLLM):
    TERM, then KILL, and return only when none of them is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        signalled: set[int] = set()
        while True:
            proc.poll()  # reap the leader so a zombie does not look alive
            members = session_members(proc.pid)
            if not members or time.monotonic() > deadline:
                break
            for pid in set(members) - signalled:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                signalled.add(pid)
            time.sleep(0.2)
        if not members:
            break
    proc.wait()


def rendezvous() -> dict:
    """Where the ranks of a multi-node job meet: the first node of the SLURM allocation, a port derived from
    the job id (two jobs sharing a node do not clash; 29500-31499, beside llm_bridge.ray_cluster's 20000-29499),
    this node's rank. Run once per node through `srun --ntasks-per-node=1`, whose tasks see SLURM_NNODES,
    SLURM_JOB_NODELIST and SLURM_NODEID. Outside SLURM, or in a one-node step: one node."""
    if "SLURM_JOB_ID" not in os.environ or int(os.environ.get("SLURM_NNODES", "1")) == 1:
        return {"node_rank": 0}
    hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                           check=True, capture_output=True, text=True).stdout.split()
    job = int(os.environ["SLURM_JOB_ID"])
    return {"rdzv_host": hosts[0], "rdzv_port": 29500 + job % 2000, "rdzv_id": f"llm-bridge-{job}",
            "node_rank": int(os.environ.get("SLURM_NODEID", "0")), "step_nnodes": int(os.environ["SLURM_NNODES"])}
