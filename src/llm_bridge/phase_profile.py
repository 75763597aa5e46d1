"""Where a PPO step's time goes, below verl's own timers: loaded into every verl process (VERL_USE_EXTERNAL_MODULES)
when `LLM_BRIDGE_PROFILE_DIR` is set, as `bench/bench_ppo_gpu.py` does. Checked against verl 0.9.1.

- The trainer: verl's v1 PPO trainer times generation, the passes and the updates, but not what it does between
  them (the next prompt batch from the loader, dispatching it to the rollout, balancing the batch across ranks):
  on the H200 about 1.4 s of a 13-s step was in no timer. `prepare` and `balance` join verl's timing_s/*.
- The workers: one call of each training-worker method (the actor's and the critic's `train_mini_batch` and
  `infer_batch`: updates, old log-probs, values) runs under torch's profiler, the `LLM_BRIDGE_PROFILE_CALL`-th
  call (default 3, i.e. the third step: after compilation, before the last). Its summary goes to
  `<dir>/<model class>.<method>.txt`: wall time, the GPU's busy time (the sum of kernel times: one stream) and the
  kernels and operators that took it. A profile that fails is reported, never fatal.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

from llm_bridge.verl_fixes import _when_imported

PROFILE_DIR = os.environ.get("LLM_BRIDGE_PROFILE_DIR")
PROFILE_CALL = int(os.environ.get("LLM_BRIDGE_PROFILE_CALL", "3"))
TOP = 30


def _time_untimed_phases(trainer_base) -> None:
    from verl.utils.debug import marked_timer

    def timed(name: str, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            timing = getattr(self, "timing_raw", None)
            if timing is None:
                return method(self, *args, **kwargs)
            # _balance_batch runs once per step; `timing` accumulates if a trainer calls it more than once
            with marked_timer(name, timing):
                return method(self, *args, **kwargs)
        return wrapper

    cls = trainer_base.PPOTrainer
    cls.prepare_step = timed("prepare", cls.prepare_step)
    cls._balance_batch = timed("balance", cls._balance_batch)


def summary(prof, wall_s: float, title: str) -> str:
    """The profile as text: GPU busy time against wall time, then the top kernels/operators by their own GPU time."""
    averages = prof.key_averages()
    attr = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
    busy_s = sum(getattr(e, attr) for e in averages) / 1e6
    table = averages.table(sort_by=attr, row_limit=TOP, max_name_column_width=90)
    cpu_table = averages.table(sort_by="self_cpu_time_total", row_limit=TOP, max_name_column_width=90)
    return (f"{title}\nwall {wall_s:.3f} s, GPU busy {busy_s:.3f} s ({100 * busy_s / wall_s:.0f} %)\n\n"
            f"by own GPU time:\n{table}\n\nby own CPU time:\n{cpu_table}\n")


def _profile_worker_calls(engine_workers) -> None:
    import torch

    def profiled(name: str, method):
        calls: dict[int, int] = {}

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            calls[id(self)] = calls.get(id(self), 0) + 1
            if calls[id(self)] != PROFILE_CALL:
                return method(self, *args, **kwargs)
            model = type(getattr(getattr(self, "engine", None), "module", None)).__name__
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            with contextlib.ExitStack() as stack:
                try:
                    prof = stack.enter_context(torch.profiler.profile(activities=activities))
                except Exception as error:  # noqa: BLE001 (a profile is never worth a failed run)
                    print(f"[llm-bridge] profile of {model}.{name} not taken: {error}", flush=True)
                    return method(self, *args, **kwargs)
                start = time.perf_counter()
                result = method(self, *args, **kwargs)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                wall = time.perf_counter() - start
            try:
                path = Path(PROFILE_DIR) / f"{model}.{name}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(summary(prof, wall, f"{model}.{name}, call {PROFILE_CALL} (pid {os.getpid()})"))
                print(f"[llm-bridge] profile of {model}.{name}: {path}", flush=True)
            except Exception as error:  # noqa: BLE001
                print(f"[llm-bridge] profile of {model}.{name} not written: {error}", flush=True)
            return result
        return wrapper

    cls = engine_workers.TrainingWorker
    for name in ("train_mini_batch", "infer_batch"):
        setattr(cls, name, profiled(name, getattr(cls, name)))


if PROFILE_DIR:
    _when_imported("verl.trainer.ppo.v1.trainer_base", _time_untimed_phases)
    _when_imported("verl.workers.engine_workers", _profile_worker_calls)
