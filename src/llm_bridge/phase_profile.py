"""Where a PPO step's time goes, below verl's own timers: loaded into every verl process (VERL_USE_EXTERNAL_MODULES)
when `LLM_BRIDGE_PROFILE_DIR` is set, as `bench/bench_ppo_gpu.py` does. Checked against verl 0.9.1.

- The trainer: verl's v1 PPO trainer times generation, the passes and the updates, but not what it does between
  them (the next prompt batch from the loader, dispatching it to the rollout, balancing the batch across ranks):
  on the H200 about 1.4 s of a 13-s step was in no timer. `prepare` and `balance` join verl's timing_s/*.
- Generation: verl's `gen` timer covers the whole rollout, from the prompts sent to the agent loop to vLLM put to
  sleep. `gen_sleep` times the sleep (`on_sample_end`); every request the agent loop sends to vLLM is logged with
  its start and end (`<dir>/requests.<pid>.jsonl`) beside the trainer's events (`<dir>/trainer-events.jsonl`),
  so that `bench/bench_ppo_gpu.py` can split a step's rollout into dispatch, the requests' window, and the tail
  after the last response.
- The calls into training workers: the trainer's calls (`values`, `update_critic`, `update_actor`, as verl times
  them) are logged as trainer events, and each worker's fetch of a call's fields from TransferQueue
  (`<dir>/worker-fetches.<pid>.jsonl`), with clock times, so that the benchmark can split verl's timer into the
  dispatch, the fetch, the method and the return.
- The workers: every call of a training-worker method has its wall time logged (`<dir>/worker-calls.<pid>.jsonl`),
  and one call of each training-worker method (the actor's and the critic's `train_mini_batch` and
  `infer_batch`: one call a step each for updates, old log-probs, values) runs under torch's profiler, the
  `LLM_BRIDGE_PROFILE_CALL`-th call (default 3; 0: none; the benchmark profiles the last step of the rows it is
  asked to, and leaves that step out of their medians: with Python stacks the step takes minutes). Its summary
  goes to `<dir>/<model class>.<method>.txt`: wall time, the GPU's kernel time, the kernels and operators that
  took it, and the Python stacks of the host-device synchronisations (each one drains the GPU's queue). A
  profile that fails is reported, never fatal. With `LLM_BRIDGE_PROFILE_STACKS=0` the profile records no Python
  stacks (seconds instead of minutes a step) and keeps the timeline instead: `<model class>.<method>.trace.json`
  (Perfetto, chrome://tracing) and, in the summary, where the GPU sat idle and what the host was doing meanwhile.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from bisect import bisect_right
from collections import Counter
from heapq import heappop, heappush
from itertools import pairwise
from pathlib import Path

from llm_bridge.import_hooks import when_imported

PROFILE_DIR = os.environ.get("LLM_BRIDGE_PROFILE_DIR")
PROFILE_CALL = int(os.environ.get("LLM_BRIDGE_PROFILE_CALL", "3"))
PROFILE_STACKS = os.environ.get("LLM_BRIDGE_PROFILE_STACKS", "1") != "0"
TOP = 30


def _append(name: str, record: dict) -> None:
    """One line of `record` in <dir>/name; a log that cannot be written is skipped, never fatal."""
    try:
        Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
        with (Path(PROFILE_DIR) / name).open("a") as out:
            out.write(json.dumps(record) + "\n")
    except OSError as error:
        print(f"[llm-bridge] {name} not written: {error}", flush=True)


def _timed(name: str, method):
    """method under verl's marked_timer `name` (a timing_s/<name> metric) and logged as a trainer event."""
    from verl.utils.debug import marked_timer

    logged = _logged(name, method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        timing = getattr(self, "timing_raw", None)
        if timing is None:
            return method(self, *args, **kwargs)
        with marked_timer(name, timing):
            return logged(self, *args, **kwargs)
    return wrapper


def _clocked(func, log: str, record: dict):
    """func with each call's start and end (clock time, comparable across processes) added to `record` in
    <dir>/log; `{pid}` in `log` is the calling process's."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return func(*args, **kwargs)
        finally:
            _append(log.format(pid=os.getpid()), {**record, "t0": start, "t1": time.time()})
    return wrapper


def _logged(name: str, method):
    """method logged as a trainer event (its start and end); alone, for a call inside a timer verl already has."""
    return _clocked(method, "trainer-events.jsonl", {"event": name})


def _time_untimed_phases(trainer_base) -> None:
    cls = trainer_base.PPOTrainer
    cls.prepare_step = _timed("prepare", cls.prepare_step)
    cls._balance_batch = _timed("balance", cls._balance_batch)
    # the calls into training workers, against the workers' own logs (fetch, the method): where verl's timer of a
    # pass or update spends what the worker's method does not
    for method, timer in (("_compute_values", "values"), ("_update_critic", "update_critic"),
                          ("_update_actor", "update_actor")):
        setattr(cls, method, _logged(timer, getattr(cls, method)))


def _log_fetches(transferqueue_utils) -> None:
    """A training worker's fetch of its call's fields from TransferQueue (before the method runs), logged."""
    transferqueue_utils._meta_to_realdata = _clocked(transferqueue_utils._meta_to_realdata,
                                                     "worker-fetches.{pid}.jsonl", {})


def _time_rollout_sleep(trainer_module) -> None:
    for cls in vars(trainer_module).values():
        if isinstance(cls, type) and "on_sample_end" in vars(cls):
            cls.on_sample_end = _timed("gen_sleep", cls.on_sample_end)


def _log_requests(llm_server) -> None:
    original = llm_server.LLMServerClient.generate

    @functools.wraps(original)
    async def generate(self, *args, **kwargs):
        start = time.time()
        try:
            return await original(self, *args, **kwargs)
        finally:
            _append(f"requests.{os.getpid()}.jsonl", {"t0": start, "t1": time.time()})

    llm_server.LLMServerClient.generate = generate


def _seconds(table: str, what: str) -> float | None:
    """A total from the footer torch prints under a table ("Self CUDA time total: 1.350s")."""
    found = re.search(rf"Self {what} time total: ([\d.]+)(us|ms|s)\b", table)
    return float(found[1]) / {"us": 1e6, "ms": 1e3, "s": 1}[found[2]] if found else None


def _is_sync(name: str) -> bool:
    return "Synchronize" in name  # cudaStreamSynchronize, cudaDeviceSynchronize


def sync_stacks(prof, top: int = 8, is_sync=_is_sync) -> str:
    """Where the host waited for the GPU (an .item(), .tolist(), nonzero, a blocking copy), most frequent first.
    A CUDA runtime call carries no Python stack itself: each is attributed to the operators around it (innermost
    first) up to the first one that has a stack, and that stack without torch's own frames."""
    groups: dict[tuple, list] = {}
    for event in prof.events():
        if not is_sync(event.name):
            continue
        ops, outer = [], event.cpu_parent
        while outer is not None and not outer.stack:
            ops.append(outer.name)
            outer = outer.cpu_parent
        stack = ()
        if outer is not None:
            ops.append(outer.name)
            stack = tuple(re.sub(r" at 0x[0-9a-f]+", "", f) for f in outer.stack if "site-packages/torch/" not in f)[:6]
        key = (event.name, " < ".join(ops[:4]) or "(no operator)", stack)
        count_time = groups.setdefault(key, [0, 0.0])
        count_time[0] += 1
        count_time[1] += event.cpu_time_total
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]
    return "\n".join(f"{count} x {name} in {ops}, {total_us / 1e3:.0f} ms:\n    " + "\n    ".join(stack or ["(no Python stack)"])
                     for (name, ops, stack), (count, total_us) in ranked) or "none"


def summary(prof, wall_s: float, title: str) -> str:
    """The profile as text: the GPU's kernel time against wall time, the top kernels/operators by their own GPU
    time and by their own CPU time, and the synchronisations' stacks."""
    averages = prof.key_averages()
    attr = "self_device_time_total" if hasattr(averages[0], "self_device_time_total") else "self_cuda_time_total"
    table = averages.table(sort_by=attr, row_limit=TOP, max_name_column_width=90)
    cpu_table = averages.table(sort_by="self_cpu_time_total", row_limit=TOP, max_name_column_width=90)
    # the footer's total, not a sum over all rows: record_function ranges (mini_batch0, ...) carry device time too
    busy_s = _seconds(table, "CUDA") or _seconds(table, "device")
    busy = f"GPU kernels {busy_s:.3f} s ({100 * busy_s / wall_s:.0f} % of wall)" if busy_s else "no GPU kernels"
    return (f"{title}\nwall {wall_s:.3f} s, {busy}\n\nby own GPU time:\n{table}\n\nby own CPU time:\n{cpu_table}\n\n"
            f"host-device synchronisations by stack:\n{sync_stacks(prof)}\n")


def profiler(activities, stacks: bool = True):
    """torch's profiler, with each operator's Python stack if `stacks`: `with_stack` alone leaves
    FunctionEvent.stack empty (torch 2.11); the verbose experimental config fills it."""
    import torch
    from torch._C._profiler import _ExperimentalConfig

    if not stacks:
        return torch.profiler.profile(activities=activities)
    return torch.profiler.profile(activities=activities, with_stack=True,
                                  experimental_config=_ExperimentalConfig(verbose=True))


GPU_WORK = {"kernel", "gpu_memcpy", "gpu_memset"}
HOST_WORK = {"cpu_op", "cuda_runtime", "cuda_driver", "user_annotation", "python_function"}


def gpu_idle(events: list[dict], min_gap_us: float = 50.0, step_us: float = 25.0, top: int = 20) -> str:
    """From a chrome trace's events: the GPU's idle time between its first and last kernel, counted in gaps of at
    least `min_gap_us`, and what the host was doing meanwhile. Every `step_us` of a gap goes to the host event
    that started last among those running at that moment (on one thread, the innermost), as a sampling profiler
    over the GPU's idle time would."""
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("ph") == "X" and e.get("cat") in GPU_WORK)
    if not spans:
        return "no GPU activity in the trace"
    busy = [list(spans[0])]
    for start, end in spans[1:]:
        if start <= busy[-1][1]:
            busy[-1][1] = max(busy[-1][1], end)
        else:
            busy.append([start, end])
    window = busy[-1][1] - busy[0][0]
    gaps = [(a[1], b[0]) for a, b in pairwise(busy) if b[0] - a[1] >= min_gap_us]
    idle = sum(b[0] - a[1] for a, b in pairwise(busy))
    host = sorted((e["ts"], e["ts"] + e.get("dur", 0), e["name"]) for e in events
                  if e.get("ph") == "X" and e.get("cat") in HOST_WORK)
    starts = [h[0] for h in host]
    by_name, gap_names = Counter(), {}
    running: list[tuple[float, float, str]] = []  # heap of (-start, end, name): the top started last
    added = 0
    for gap in gaps:
        gap_names[gap] = Counter()
        for i in range(int((gap[1] - gap[0]) // step_us)):
            t = gap[0] + step_us * (i + 0.5)
            upto = bisect_right(starts, t)
            for h in host[added:upto]:
                heappush(running, (-h[0], h[1], h[2]))
            added = max(added, upto)
            while running and running[0][1] <= t:  # ended: an ended event below the top is dropped when it surfaces
                heappop(running)
            name = running[0][2] if running else "(no host event)"
            by_name[name] += step_us
            gap_names[gap][name] += step_us
    counted = sum(end - start for start, end in gaps)
    lines = [(f"GPU busy {(window - idle) / 1e3:.1f} ms of {window / 1e3:.1f} ms (first to last kernel); idle "
              f"{idle / 1e3:.1f} ms, of which {counted / 1e3:.1f} ms in {len(gaps)} gaps of {min_gap_us / 1e3:g} ms "
              f"or more"), f"what the host was doing in those gaps (sampled every {step_us:g} us):"]
    lines += [f"  {ms / 1e3:9.1f} ms  {name}" for name, ms in by_name.most_common(top)]
    lines.append("the longest gaps (offset from the first kernel, length, what the host was doing):")
    for start, end in sorted(gaps, key=lambda g: g[0] - g[1])[:10]:
        doing = ", ".join(f"{n} {ms / 1e3:.1f}" for n, ms in gap_names[(start, end)].most_common(3))
        offset = f"+{(start - busy[0][0]) / 1e3:.1f}"
        lines.append(f"  {offset:>9} ms  {(end - start) / 1e3:6.1f} ms  {doing}")
    return "\n".join(lines)


def _profile_worker_calls(engine_workers) -> None:
    import torch

    def profiled(name: str, method):
        calls: dict[int, int] = {}

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            calls[id(self)] = calls.get(id(self), 0) + 1
            # the model inside FSDP's wrapper: actor and critic share one process and both are FSDP modules
            module = getattr(getattr(self, "engine", None), "module", None)
            model = type(getattr(module, "module", module)).__name__
            if calls[id(self)] != PROFILE_CALL:
                # every call's wall inside the worker: verl's update timers also hold the trainer's side and the
                # transfer (the H200's actor update: 1.76 s in verl's timer, about 1.58 s in the worker)
                t0, start = time.time(), time.perf_counter()
                result = method(self, *args, **kwargs)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                _append(f"worker-calls.{os.getpid()}.jsonl", {"call": f"{model}.{name}", "n": calls[id(self)],
                                                              "s": time.perf_counter() - start, "t0": t0,
                                                              "t1": time.time()})
                return result
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()
            with contextlib.ExitStack() as stack:
                try:
                    prof = stack.enter_context(profiler(activities, stacks=PROFILE_STACKS))
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
                text = summary(prof, wall, f"{model}.{name}, call {PROFILE_CALL} (pid {os.getpid()})")
                if not PROFILE_STACKS:  # the timeline instead of the stacks
                    trace = path.with_suffix(".trace.json")
                    prof.export_chrome_trace(str(trace))
                    text += "\nwhere the GPU waited:\n" + gpu_idle(json.loads(trace.read_text())["traceEvents"]) + "\n"
                path.write_text(text)
                print(f"[llm-bridge] profile of {model}.{name}: {path}", flush=True)
            except Exception as error:  # noqa: BLE001
                print(f"[llm-bridge] profile of {model}.{name} not written: {error}", flush=True)
            return result
        return wrapper

    cls = engine_workers.TrainingWorker
    for name in ("train_mini_batch", "infer_batch"):
        setattr(cls, name, profiled(name, getattr(cls, name)))


if PROFILE_DIR:
    when_imported("verl.trainer.ppo.v1.trainer_base", _time_untimed_phases)
    when_imported("verl.workers.engine_workers", _profile_worker_calls)
    when_imported("verl.trainer.ppo.v1.trainer_sync", _time_rollout_sleep)
    when_imported("verl.trainer.ppo.v1.trainer_colocate_async", _time_rollout_sleep)
    when_imported("verl.workers.rollout.llm_server", _log_requests)
    when_imported("verl.utils.transferqueue_utils", _log_fetches)
