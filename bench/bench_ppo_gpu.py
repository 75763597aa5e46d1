"""PPO step time on one GPU, side by side in one run: the seed's settings against the tuned preset (and variants),
same model, same data. Each row is the project's own `ppo` stage (python -m llm_bridge.ppo, the params JSON
rules/ppo.smk would pass for preset h200x1), a few steps long. Prints a markdown table; docs/benchmarks.md
records it.

    PYTHONPATH=src python bench/bench_ppo_gpu.py --model-dir M --data-dir D --out OUT [--rows seed,tuned,...]

Per row: the median over steps after the first (the first compiles kernels and captures CUDA graphs) of verl's
per-phase timers (timing_s/*), tokens/s (perf/total_num_tokens / timing_s/step), and the MFU of the actor and
critic updates, computed here, not taken from verl's perf/mfu/* (unreliable without flash-attn):
  update FLOPs = tokens x (6 N + 12 L d s)   (forward + backward; PaLM's convention, as bench/bench_gpu.py)
N: the parameters the update multiplies by (actor: all, the tied embedding counted once as the lm_head; critic:
the decoder layers and a one-output head, no vocabulary projection), s: mean sequence length, 989 TFLOP/s the
H100/H200 dense bf16 peak. verl's update timers also hold the trainer's side and the transfer to the worker;
the same MFU on the worker's own wall (each call timed by llm_bridge.phase_profile) is printed beside them.
Rows save no checkpoint (27 GB of actor + critic state each): the stage then ends with "no complete
checkpoint", which is expected here; the metrics are read from verl's per-step jsonl. The row
named by --keep saves one at its last step (outside the median: that step is the slowest), so the chain's
merged_model and evaluate stages can take it without a PPO start-up of their own.

Each row also reports the KL between the rollout's (vLLM's) and the actor's log-probs of the same tokens: verl's
rollout_corr/kl where the actor recomputes the old log-probs, actor/ppo_kl in bypass mode (the preset's: the
rollout's log-probs are the old policy's, so the update's KL to the old policy starts from rollout vs actor).
Tuning must not move it: a kernel that computed different log-probs, or a broken weight sync, shows here first.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts" / "gpu"))
from bench_gpu import PEAK_FLOPS, critic_params, model_shape, run_rows  # noqa: E402  (beside this file)
PHASES = ("prepare", "gen", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights",
          "untimed", "step")
# timers not added up into the step's timed parts: the step itself, testing (outside it), gen_sleep (inside gen)
NOT_ADDED = {"timing_s/step", "timing_s/testing", "timing_s/gen_sleep"}
# name -> (settings replacing the h200x1 preset's ppo section, extra overrides, env replacing the preset's)
SEED = ({"overrides": []}, [], {"LLM_BRIDGE_FAST_LOGPROBS": "0"})  # the seed's values: padded micro batches of 8,
# SDPA, gradient checkpointing (verl's default), verl's per-token log-prob loop, vLLM at 40 % sleeping between steps
ROWS = {
    "seed": SEED,
    "tuned": ({}, [], {}),
    # vLLM keeps its weights and KV cache between steps (no sleep/wake); a smaller share leaves room for training
    "tuned-awake": ({"gpu_memory_utilization": 0.12}, ["actor_rollout_ref.rollout.free_cache_engine=False"], {}),
    "tuned-noliger": ({}, ["actor_rollout_ref.model.use_liger=False"], {}),
    "tuned-8k-prefill": ({}, ["actor_rollout_ref.rollout.max_num_batched_tokens=8192"], {}),
    # the actor recomputes the old policy's log-probs (verl's default) instead of taking the rollout's, as the
    # preset's bypass mode does (they agree to 2e-4 nats a token: rollout_corr/kl of this row)
    "tuned-recompute": ({}, ["algorithm.rollout_correction.bypass_mode=False"], {}),
    # vLLM returns no per-token log-probs (1.6 s of 3.3 for vLLM alone: bench/results/rollout-h200-2026-12-02.json);
    # bypass mode needs them, so the old log-prob pass comes back, and verl's rollout_corr/* metrics go
    "tuned-no-rollout-logprobs": ({}, ["actor_rollout_ref.rollout.calculate_log_probs=False",
                                       "algorithm.rollout_correction.bypass_mode=False"], {}),
    # verl's requests to the vLLM server: detokenized text and log-prob tokens, an output after every decode step
    # (llm_bridge.seeded_rollout asks for the final token ids and log-probs only)
    "tuned-full-outputs": ({}, [], {"LLM_BRIDGE_FULL_ROLLOUT_OUTPUTS": "1"}),
    # verl's per-sample loop in no_padding_2_padding (llm_bridge.verl_fixes cuts the responses out in one gather)
    "tuned-verl-padding": ({}, [], {"LLM_BRIDGE_VERL_PADDING_LOOP": "1"}),
    # verl's per-sample Python objects fetched by the workers and carried through their splits (llm_bridge.verl_fixes
    # fetches and splits the tensors only)
    "tuned-sample-objects": ({}, [], {"LLM_BRIDGE_KEEP_SAMPLE_OBJECTS": "1"}),
    # verl's garbage collector settings: full collections scan everything the processes built (llm_bridge.verl_fixes
    # freezes the heap after the build)
    "tuned-gc-unfrozen": ({}, [], {"LLM_BRIDGE_GC_UNFROZEN": "1"}),
    # verl's mini- and micro-batch row selection: one tensor a sample, picked in Python and concatenated
    # (llm_bridge.verl_fixes slices each nested field's packed values at once)
    "tuned-verl-splits": ({}, [], {"LLM_BRIDGE_VERL_SPLITS": "1"}),
    # both of verl's host-side behaviours back: what the two fixes save together
    "tuned-verl-host": ({}, [], {"LLM_BRIDGE_KEEP_SAMPLE_OBJECTS": "1", "LLM_BRIDGE_GC_UNFROZEN": "1"}),
    # the CPU preset's start-up cuts on the GPU: no 8 reward-loop processes (the agent loop scores its rollouts
    # itself, llm_bridge.verl_fixes; they start beside vLLM's server, 15 s of imports each) and no 16 idle Ray
    # workers started ahead (none of them became an actor on the H100, 2026-12-06: Ray starts every actor anew)
    "tuned-lean-start": ({}, ["reward.num_workers=0"], {"RAY_enable_worker_prestart": "0",
                                                         "RAY_prestart_worker_first_driver": "0"}),
    # the value pass over the whole step (85k tokens) in one micro batch instead of two of at most 64k: the pass is
    # forward only (no activations kept) and waits on the host (GPU busy 18 % under the profiler, 2026-12-06)
    "tuned-one-value-batch": ({}, ["critic.forward_max_token_len_per_gpu=131072"], {}),
    # FSDP2 (per-parameter DTensor sharding) for actor and critic instead of FSDP1's flat parameters
    "tuned-fsdp2": ({}, ["actor_rollout_ref.actor.strategy=fsdp2", "critic.strategy=fsdp2"], {}),
    # two changes, each in a timer of its own: the value pass in one micro batch, and no sequence balancing (one GPU:
    # nothing to balance; the `balance` timer, 0.10 s). Before the preset gave the critic Liger's kernels, this row
    # also did (2026-12-06, H200: critic update 2.33 -> 2.05 s); the name stays for those results
    "tuned-critic-liger": ({}, ["critic.forward_max_token_len_per_gpu=131072", "trainer.balance_batch=False"], {}),
    # the critic without Liger's kernels, as before the preset had them: on one GPU it shares the actor's process,
    # where Liger's patch reaches the rotary embedding (a function) but not the RMSNorm and MLP classes the critic
    # was built with (the H200's profile, 2026-12-06). With them its update ran 1.51 s on an H100 (2026-12-07), the
    # four tuned rows before 1.66-1.75 s on three other H100s
    "tuned-critic-no-liger": ({}, ["critic.model.use_liger=False"], {}),
    # torch's foreach AdamW (its default on CUDA, a pass over memory per foreach op) for actor and critic instead
    # of the preset's fused one: as the presets were before 2026-12-07, when fused AdamW took an H100's actor update
    # 1.86-2.05 -> 1.81 s and the critic's 1.36-1.47 -> 1.30-1.34 s (the step alone 42 -> 19 ms, bench_adamw.py)
    "tuned-foreach-adam": ({}, ["actor_rollout_ref.actor.optim.override_optimizer_config={fused:false}",
                                "critic.optim.override_optimizer_config={fused:false}"], {}),
    # each decoder layer of actor, critic and reference under torch.compile (llm_bridge.gpu_support; the log-probs
    # stay in the presets' Triton kernels): Inductor fuses the norms, rotary embedding and SwiGLU itself (so no
    # Liger), and the host launches a few kernels a layer instead of dozens (the H100's actor update: GPU idle 28 %
    # of the time, 1,024 gaps while the host launched small kernels). First try 2026-12-06: actor update 2.15 ->
    # 2.51 s, each layer then split in five graphs (fixed since). Slower on every H100 since, also at a 24k-token
    # actor budget (1.90 -> 2.20 s; with the classic allocator 1.80-1.85 -> 2.06-2.46 s, 2026-12-07): left for the
    # H200's full budgets
    "tuned-compile": ({}, ["actor_rollout_ref.model.use_liger=False"], {"LLM_BRIDGE_COMPILE": "1"}),
    # PyTorch's classic caching allocator instead of the preset's expandable segments (CUDA virtual memory mapped
    # as a segment grows): verl empties the cache each step for vLLM's wake, and on the 80-GB H100, near the card's
    # limit (76 of 79.6 GiB reserved), the first backward of an update waited 130 ms on the allocator (2026-12-06)
    # and the compiled 24k row 287 ms in `aten::empty_strided` (2026-12-07). Side by side on an H100 (2026-12-07):
    # actor update 1.80 against 1.85 s, critic 1.28 against 1.29 s, within the host's drift between runs
    "tuned-classic-allocator": ({}, [], {"PYTORCH_CUDA_ALLOC_CONF": ""}),
    # the log-probs as the presets had them before 2026-12-08: one vectorised cross-entropy on fp32 copies of the
    # logits instead of the presets' two Triton kernels on the bf16 logits (llm_bridge.logprob_kernel). Side by side
    # on an H100 (2026-12-08): actor update 1.81 -> 1.67 s in the worker with the kernels (35.8 -> 38.8 % MFU)
    "tuned-vectorised-logprobs": ({}, [], {"LLM_BRIDGE_FAST_LOGPROBS": "1"}),
    # an H100 with `--fit h100` (a 16k actor budget) at 24k: without the fp32 logits (20 GiB less for a 16k-token
    # micro batch) it may fit without the allocator waits the compiled 24k row met; one micro batch a mini batch
    "tuned-24k": ({}, ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576"], {}),
}
# `--fit NAME`: what another GPU needs for the tuned rows, by name. An 80-GB H100: half the h200x1 preset's token
# budgets (the actor 16k: two micro batches a mini batch)
FITS = {"h100": ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384",
                 "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768",
                 "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768",
                 "critic.ppo_max_token_len_per_gpu=32768", "critic.forward_max_token_len_per_gpu=32768")}


def row_params(name: str, steps: int, gsm8k: Path, max_prompt_length: int, keep: bool = False,
               profile_dir: Path | None = None, profile_last_step: bool = False, fit: tuple[str, ...] = ()) -> str:
    """The row's params JSON; with profile_dir, llm_bridge.phase_profile times what verl leaves untimed and logs
    the rollout's requests into that folder, and with profile_last_step also profiles the last step's call of each
    training-worker method (that step is left out of the medians)."""
    from prepare_run import params_for

    settings, extra, env = ROWS[name]
    preset = yaml.safe_load((REPO / "config" / "presets" / "h200x1.yaml").read_text())
    preset["ppo"] = {**preset["ppo"], **settings, "total_training_steps": steps, "save_freq": steps if keep else -1,
                     "test_freq": -1}
    # `fit`: what another GPU needs for the tuned rows (an 80-GB H100: smaller token budgets); the seed's fit as they
    # are, and a row's own setting of a key wins (a row that tries a budget on that GPU)
    own = {o.split("=", 1)[0] for o in extra}
    fit = [] if name == "seed" else [o for o in fit if o.split("=", 1)[0] not in own]
    preset["ppo"]["overrides"] = list(preset["ppo"].get("overrides", [])) + extra + fit
    preset["env"] = {**preset.get("env", {}), **env}
    if profile_dir:
        modules = [m for m in preset["env"].get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
        preset["env"].update(LLM_BRIDGE_PROFILE_DIR=str(profile_dir),
                             LLM_BRIDGE_PROFILE_CALL=str(steps if profile_last_step else 0),  # 0: no call profiled
                             # 0: the timeline and the GPU's idle gaps instead of Python stacks (seconds, not minutes)
                             LLM_BRIDGE_PROFILE_STACKS=os.environ.get("LLM_BRIDGE_PROFILE_STACKS", "1"),
                             VERL_USE_EXTERNAL_MODULES=",".join([*modules, "llm_bridge.phase_profile"]))
    return params_for(preset, "ppo", gsm8k, max_prompt_length, [])


# vLLM's own start-up timings, in the row's log because the benchmark runs vLLM at INFO (verl sets WARN)
VLLM_STARTUP = {"weights": r"Model loading took [\d.]+ GiB(?: memory)? and ([\d.]+) seconds",
                "engine": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
                "compilation": r"init engine .* took [\d.]+ s \(compilation: ([\d.]+) s",
                "cuda_graphs": r"Graph capturing finished in (\d+) secs"}


def startup(log: Path, started: float, steps: list[dict]) -> dict:
    """Where the row's start-up went: the seconds of each phase from the launch to the first step's end, as
    the stage's terminal line reports them (llm_bridge.console), and vLLM's own timings inside its phase."""
    from llm_bridge import console

    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {}
    marks = console.startup_marks(text)
    # the first step's timer starts at verl's "ready to fit" (the agent loops come up inside it, in `prepare`)
    ready = marks.get(next(phase for line, phase, _ in console.PPO_STARTUP if line.startswith("all initialize finished")))
    first = steps[0].get("timing_s/step") if steps else None
    first_done = ready + first if ready and first else None
    found = {name: float(m[1]) for name, pattern in VLLM_STARTUP.items() if (m := re.search(pattern, text))}
    return {"phases": {phase: round(s, 1) for phase, s in console.startup_split(marks, started, first_done)},
            "vllm": found}


def safely(read, *args) -> list:
    """A reading of Ray's logs that fails (a Ray version that words them differently) costs its rows, not the
    benchmark's other rows."""
    try:
        return read(*args)
    except Exception as e:  # noqa: BLE001
        print(f"[bench] {read.__name__}: {e!r}", file=sys.stderr)
        return []


def ray_actors(started: float, keep: Path) -> list[dict]:
    """Each Ray worker process of the row's (just finished) Ray session: the actor it became (none for the idle
    ones Ray starts ahead), when the process started, when its actor was handed its creation task and when that
    task (the class's imports and __init__) ended: seconds from the launch, read from Ray's own logs. This is
    what the start-up's phases are made of. Ray's GCS log is kept beside the row (`keep`) for a closer look."""
    from llm_bridge import console

    logs = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "session_latest" / "logs"

    def when(line: str) -> float | None:  # Ray's lines open with "[2026-12-06 12:40:01,476 I ..."
        return round(t - started, 1) if (t := console.log_time(line)) is not None else None

    try:
        gcs = (logs / "gcs_server.out").read_text(errors="replace")
    except OSError:
        return []
    opened = next((when(line) for line in gcs.splitlines() if console.log_time(line) is not None), None)
    if opened is None or opened < 0:  # an earlier session's: this row stopped before it started Ray
        return []
    keep.write_text(gcs)
    handed, created = {}, {}
    for line in gcs.splitlines():
        if (w := re.search(r"worker_id=([0-9a-f]+)", line)) and "Submitting actor creation task" in line:
            handed[w[1]] = when(line)
        elif w and "Actor creation task succeeded" in line:
            created[w[1]] = when(line)
    actors = []
    for core in logs.glob("python-core-worker-*_*.log"):
        worker, pid = core.stem[len("python-core-worker-"):].rsplit("_", 1)
        try:
            with core.open(errors="replace") as f:
                born = when(f.readline())
            out = next(logs.glob(f"worker-{worker}-*-{pid}.out"), None)
            name = re.search(r"^:(actor|task)_name:(.+)$", out.read_text(errors="replace"), re.MULTILINE) if out else None
        except OSError:
            continue
        actors.append({"actor": (name[2] if name[1] == "actor" else f"task {name[2]}") if name else None, "pid": int(pid), "process_start": born,
                       "handed": handed.get(worker), "created": created.get(worker)})
    return sorted(actors, key=lambda a: a["process_start"] or 0)


def run_row(name: str, args, deadline: float) -> dict:
    out = args.out / name
    params = row_params(name, args.seed_steps if name == "seed" else args.steps, args.gsm8k, args.max_prompt_length,
                        keep=name == args.keep,
                        # the seed row is the baseline, not a subject: no timers of ours
                        profile_dir=None if name == "seed" else (out / "profile").resolve(),
                        profile_last_step=name in args.profile, fit=FITS.get(args.fit, tuple(args.fit.split())))
    cmd = [sys.executable, "-m", "llm_bridge.ppo", "--params", params, "--sft-model", str(args.model_dir),
           "--data-dir", str(args.data_dir), "--out-dir", str(out)]
    budget = deadline - time.monotonic()
    parsed = json.loads(params)
    row = {"row": name, "overrides": parsed["ppo"]["overrides"], "env": parsed.get("env", {})}
    if budget < args.min_row_s:
        return {**row, "error": "skipped: out of time"}
    # a row run again starts from an empty folder: its phase profiler appends per-process logs there, and a second
    # run's would be read together with the first's (2026-12-07, H100: the same call split for both runs)
    shutil.rmtree(out, ignore_errors=True)
    start, started = time.monotonic(), time.time()
    env = {"VLLM_LOGGING_LEVEL": "INFO", **os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    with (args.out / f"{name}.log").open("w") as log:
        try:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=budget).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    from llm_bridge import metrics

    steps = metrics.collect(out / "checkpoints")
    row.update(wall_s=round(time.monotonic() - start, 1), exit=code, steps=steps,
               startup_split_s=startup(out / "train.log", started, steps),
               ray_actors=safely(ray_actors, started, out / "gcs_server.log"))
    # not the first step (compilation, CUDA graphs) nor the last (profiled, and the --keep row's checkpoint)
    last_is_special = name in args.profile or name == args.keep  # profiled, or saving the checkpoint
    measured = steps[1:-1] if len(steps) > 2 and last_is_special else steps[1:]
    if not measured:  # the first step alone carries one-time costs (54 s against 9.5 for the tuned row): no median
        first = {k: v for k, v in steps[0].items() if k.startswith("timing_s/")} if steps else {}
        return {**row, "error": f"exit {code}: {len(steps)} step(s) logged, none after the first (see {name}.log)",
                **({"first_step_timing_s": first} if first else {})}
    timing = {k[len("timing_s/"):]: statistics.median(s[k] for s in measured if k in s)
              for k in sorted({k for s in measured for k in s if k.startswith("timing_s/")})}
    # what no timer covers: the step minus its timed parts, per step (testing runs outside the step)
    timing["untimed"] = statistics.median(
        s["timing_s/step"] - sum(v for k, v in s.items() if k.startswith("timing_s/") and k not in NOT_ADDED)
        for s in measured)
    tokens = statistics.median(s["perf/total_num_tokens"] for s in measured)
    numbers = [s["step"] for s in measured]
    return {**row, "s_per_step": timing["step"], "tokens_per_s": tokens / timing["step"], "tokens_per_step": tokens,
            # Ray, the FSDP workers and vLLM's start (compilation, CUDA graphs): the run's wall time outside its steps
            "startup_s": round(row["wall_s"] - sum(s["timing_s/step"] + s.get("timing_s/testing", 0) for s in steps), 1),
            "timing_s": timing, "measured_steps": numbers,
            "response_length": statistics.median(s.get("response_length/mean", 0) for s in measured),
            "rollout_actor_kl": statistics.median(s.get("rollout_corr/kl", float("nan")) for s in measured),
            "actor_ppo_kl": statistics.median(s.get("actor/ppo_kl", float("nan")) for s in measured),
            "rollout_split_s": rollout_split(out / "profile", numbers),
            "worker_s": worker_calls(out / "profile", numbers),
            "call_split_s": call_split(out / "profile", numbers)}


def jsonl(paths) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def worker_calls(profile: Path, steps: list[int]) -> dict:
    """Each training-worker method's wall inside the worker (llm_bridge.phase_profile), median over `steps`: each
    of them is called once a step (the n-th call in step n), so verl's timer minus this is the trainer's side and
    the transfer."""
    try:
        calls = jsonl(profile.glob("worker-calls.*.jsonl"))
    except (OSError, ValueError):
        return {}
    seconds: dict[str, list[float]] = {}
    for c in calls:
        if c["n"] in steps:
            seconds.setdefault(c["call"], []).append(c["s"])
    return {name: statistics.median(s) for name, s in sorted(seconds.items())}


# the trainer's calls into training workers (llm_bridge.phase_profile's events) and the worker method each makes
TRAINER_CALLS = {"values": "ForTokenClassification.infer_batch",
                 "update_critic": "ForTokenClassification.train_mini_batch",
                 "update_actor": "ForCausalLM.train_mini_batch"}


def call_split(profile: Path, steps: list[int]) -> dict:
    """Each trainer call into a training worker, split (seconds, median over `steps`): `wall` verl's timer of it,
    `to_worker` from the trainer's call to the worker's fetch (the trainer's side, Ray's dispatch), `fetch` the
    worker's fetch of the call's fields from TransferQueue, `method` the method's own wall without the fetch, `back`
    from its end to the trainer having the result (the return, the metrics), `between` the rest (verl's wrappers).
    The critic's calls fetch inside the timed method (verl's TransferQueue bridge wraps TrainingWorker's methods,
    which the critic's worker group calls directly), the actor's before it (its bridge wraps
    ActorRolloutRefWorker.update_actor): `method` leaves the fetch out of both."""
    try:
        events = jsonl([profile / "trainer-events.jsonl"])
        fetches = jsonl(profile.glob("worker-fetches.*.jsonl"))
        methods = [c for c in jsonl(profile.glob("worker-calls.*.jsonl")) if "t0" in c]
    except (OSError, ValueError):
        return {}
    out = {}
    for call, method in TRAINER_CALLS.items():
        mine = [e for e in events if e["event"] == call]
        rows = []
        for step in steps:
            if step > len(mine):
                continue
            e = mine[step - 1]
            inside = [m for m in methods if m["call"].endswith(method) and e["t0"] <= m["t0"] <= e["t1"]]
            fetched = [f for f in fetches if e["t0"] <= f["t0"] <= f["t1"] <= e["t1"]]
            if len(inside) != 1 or not fetched:
                continue
            m, f = inside[0], min(fetched, key=lambda f: f["t0"])
            fetch, wall = f["t1"] - f["t0"], e["t1"] - e["t0"]
            row = {"wall": wall, "to_worker": min(f["t0"], m["t0"]) - e["t0"], "fetch": fetch,
                   "method": m["t1"] - m["t0"] - (fetch if f["t0"] >= m["t0"] else 0), "back": e["t1"] - m["t1"]}
            rows.append({**row, "between": wall - sum(v for k, v in row.items() if k != "wall")})
        if rows:
            out[call] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return out


def rollout_split(profile: Path, steps: list[int]) -> dict:
    """verl's `gen`, split by llm_bridge.phase_profile's logs (median over `steps`, 1-based): `dispatch` from the
    prompts handed to the agent loop to its first request to vLLM, `requests` from the first request's start to
    the last one's end, `tail` from there to the trainer having the batch (TransferQueue, replay buffer),
    `sleep` vLLM put to sleep; `request` is the median request's own time."""
    try:
        events = jsonl([profile / "trainer-events.jsonl"])
        requests = jsonl(profile.glob("requests.*.jsonl"))
    except (OSError, ValueError):
        return {}
    prepares = [e for e in events if e["event"] == "prepare"]
    sleeps = [e for e in events if e["event"] == "gen_sleep"]
    rows = []
    for step in steps:
        if step > min(len(prepares), len(sleeps)):
            continue
        sent, slept = prepares[step - 1], sleeps[step - 1]
        mine = [r for r in requests if sent["t0"] <= r["t0"] <= slept["t0"]]
        if mine:
            first, last = min(r["t0"] for r in mine), max(r["t1"] for r in mine)
            rows.append({"dispatch": first - sent["t1"], "requests": last - first, "tail": slept["t0"] - last,
                         "sleep": slept["t1"] - slept["t0"],
                         "request": statistics.median(r["t1"] - r["t0"] for r in mine), "n_requests": len(mine)})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]} if rows else {}


def update_mfu(row: dict, shape: dict) -> dict:
    """MFU of the actor and critic updates (see the module docstring)."""
    from llm_bridge.fit import param_count

    if "timing_s" not in row:
        return {}
    n_all, n_critic = param_count(shape)[0], critic_params(shape)
    seqs = row["steps"][-1].get("response_length/mean", 0) + row["steps"][-1].get("prompt_length/mean", 0)
    attn = 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seqs
    out = {}
    # verl's timers, then the worker's own wall (the actor's model is the one with the LM head): the method without
    # its fetch where the call was split (the critic's method fetches inside), else the method as timed
    worker, split = row.get("worker_s", {}), row.get("call_split_s", {})
    for phase, n in (("update_actor", n_all), ("update_critic", n_critic)):
        own = split.get(phase, {}).get("method") or next(
            (s for name, s in worker.items() if name.endswith(TRAINER_CALLS[phase])), None)
        seconds = {phase: row["timing_s"].get(phase), f"{phase}_in_worker": own}
        out |= {key: row["tokens_per_step"] * (6 * n + attn) / s / PEAK_FLOPS for key, s in seconds.items() if s}
    return out


def table(rows: list[dict]) -> str:
    seed = next((r for r in rows if r["row"] == "seed" and "s_per_step" in r), None)
    head = ["row", "s/step", "tokens/s", *PHASES[:-1], "MFU actor upd", "MFU critic upd", "rollout/actor KL", "actor ppo_kl", "start-up s", "vs seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "s_per_step" not in r:
            lines.append(f"| {r['row']} | {r.get('error', '-')} |" + " |" * (len(head) - 2))
            continue
        phases = [f"{r['timing_s'].get(p, float('nan')):.2f}" for p in PHASES[:-1]]
        mfu = [f"{r['mfu'].get(p, 0):.1%}" for p in ("update_actor", "update_critic")]
        vs = f"{seed['s_per_step'] / r['s_per_step']:.2f}x" if seed else "-"
        lines.append(f"| {r['row']} | {r['s_per_step']:.2f} | {r['tokens_per_s']:,.0f} | " + " | ".join(phases + mfu)
                     + f" | {r.get('rollout_actor_kl', float('nan')):.4f} | {r.get('actor_ppo_kl', float('nan')):.4f}"
                     + f" | {r.get('startup_s', float('nan')):.0f} | {vs} |")
    split = [r for r in rows if r.get("worker_s")]
    if split:
        calls = list(dict.fromkeys(c for r in split for c in r["worker_s"]))
        lines += ["", ("inside the workers (seconds a call; verl's update timers add the trainer's side and the "
                       "transfer), and the updates' MFU on the method's own wall (without its fetch where the "
                       "call was split below):"), "",
                  "| row | " + " | ".join(calls) + " | MFU actor upd (worker) | MFU critic upd (worker) |",
                  "|---|" + "---|" * (len(calls) + 2)]
        lines += [f"| {r['row']} | " + " | ".join(f"{r['worker_s'].get(c, float('nan')):.2f}" for c in calls)
                  + "".join(f" | {r['mfu'].get(k, 0):.1%}" for k in ("update_actor_in_worker", "update_critic_in_worker"))
                  + " |" for r in split]
    split = [r for r in rows if r.get("call_split_s")]
    if split:
        keys = ("wall", "to_worker", "fetch", "between", "method", "back")
        lines += ["", "the trainer's calls into training workers, split (seconds, llm_bridge.phase_profile):", "",
                  "| row | call | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        lines += [f"| {r['row']} | {call} | " + " | ".join(f"{times[k]:.3f}" for k in keys) + " |"
                  for r in split for call, times in r["call_split_s"].items()]
    split = [r for r in rows if r.get("rollout_split_s")]
    if split:
        keys = ("dispatch", "requests", "tail", "sleep", "request")
        lines += ["", "verl's gen, split (seconds, llm_bridge.phase_profile):", "",
                  "| row | " + " | ".join(keys) + " | requests a step |", "|---|" + "---|" * (len(keys) + 1)]
        lines += [f"| {r['row']} | " + " | ".join(f"{r['rollout_split_s'][k]:.2f}" for k in keys)
                  + f" | {r['rollout_split_s']['n_requests']:.0f} |" for r in split]
    split = [r for r in rows if r.get("startup_split_s", {}).get("phases")]
    if split:
        phases = list(dict.fromkeys(p for r in split for p in r["startup_split_s"]["phases"]))
        vllm = list(VLLM_STARTUP)
        lines += ["", "start-up, from the launch to the first step's end (seconds; vLLM's own timings inside its phase):", "",
                  "| row | " + " | ".join(phases + [f"vLLM {k}" for k in vllm]) + " |",
                  "|---|" + "---|" * (len(phases) + len(vllm))]
        lines += [f"| {r['row']} | " + " | ".join(f"{r['startup_split_s']['phases'].get(p, float('nan')):.0f}" for p in phases)
                  + " | " + " | ".join(f"{r['startup_split_s']['vllm'].get(k, float('nan')):.1f}" for k in vllm) + " |"
                  for r in split]
    for r in (r for r in rows if r.get("ray_actors")):
        lines += ["", f"{r['row']}: Ray's worker processes by the actor they became (seconds from the launch):", "",
                  "| actor | processes | first started | last handed its creation task | last created |", "|---|---|---|---|---|"]
        for actor in dict.fromkeys(a["actor"] for a in r["ray_actors"]):
            mine = [a for a in r["ray_actors"] if a["actor"] == actor]
            last = [max((a[k] for a in mine if a[k] is not None), default=float("nan")) for k in ("handed", "created")]
            lines.append(f"| {actor or '(idle, started ahead)'} | {len(mine)} | "
                         f"{min(a['process_start'] or 0 for a in mine):.1f} | {last[0]:.1f} | {last[1]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="HF folder the actor and critic start from")
    parser.add_argument("--data-dir", type=Path, required=True, help="the parquet stage's folder (train.parquet)")
    parser.add_argument("--gsm8k", type=Path, default=REPO / ".gpu" / "gsm8k")
    parser.add_argument("--max-prompt-length", type=int, default=512)  # the seed's
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", default="seed,tuned")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed-steps", type=int, default=3)
    parser.add_argument("--keep", default="", help="the row whose checkpoint is saved (for merged_model/evaluate)")
    # the profiled step (torch's profiler with Python stacks on three training-worker calls) took 200-227 s of GPU
    # time on 2026-12-06: profile one row of a run, not all
    parser.add_argument("--fit", default="", help="verl overrides (space-separated) added to every row but the seed's, "
                        "for a GPU the h200x1 preset does not fit, or the name of a set of them: "
                        f"{', '.join(FITS)} (an H100: smaller token budgets)")
    parser.add_argument("--profile", default="", help="rows whose last step runs under the profiler (comma-separated)")
    parser.add_argument("--deadline", type=float, default=540, help="seconds for all rows; later rows are skipped")
    parser.add_argument("--min-row-s", type=float, default=330,
                        help="a row starts only with this much of the deadline left (PPO's start-up alone: 4.2-4.7 min)")
    args = parser.parse_args()
    args.model_dir, args.data_dir = args.model_dir.resolve(), args.data_dir.resolve()
    args.profile = set(filter(None, args.profile.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    shape = model_shape(args.model_dir)
    deadline = time.monotonic() + args.deadline

    def run_one(name: str) -> dict:
        row = run_row(name, args, deadline)
        return {**row, "mfu": update_mfu(row, shape)}

    # Rows an earlier run left in --out stay in results.json and the table (a second run on the same machine adds
    # rows, e.g. `bench-ppo=tuned bench-ppo=seed`); a row run again replaces its old one.
    earlier = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else []
    rows = run_rows(args.rows.split(","), run_one, args.out, hidden=("overrides", "env", "steps"), earlier=earlier)
    import torch

    versions = f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}"
    text = table(rows)
    (args.out / "table.md").write_text(f"{time.strftime('%Y-%m-%d')}, {versions}\n\n{text}\n")
    print(f"\n{versions}\n{text}")


if __name__ == "__main__":
    main()
