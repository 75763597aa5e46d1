"""Stage `sft`: verl's SFT trainer (`verl.trainer.sft_trainer`) under torchrun, question -> answer.

Checkpoints go to `<out>/checkpoints` in verl's layout; an interrupted run with the same settings resumes
from verl's latest complete checkpoint (`trainer.resume_mode=auto`). When training is done, `<out>/result.json`
names the checkpoint and holds the per-step metrics: that file is the stage's output.

    python -m llm_bridge.sft --params '<json>' --base-model runs/tiny/base_model --data-dir runs/tiny/parquet --out-dir runs/tiny/sft \
        --log runs/tiny/logs/sft.log
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llm_bridge import console, launch, metrics
from llm_bridge.errors import InputError


def verl_overrides(sft: dict, base_model: Path, data_dir: Path, ckpt_dir: Path, cluster: dict, seed: int) -> list[str]:
    """The hydra overrides for verl's sft_trainer; keys are verl's own names."""
    args = [
        f"data.train_files={data_dir / 'sft_train.parquet'}",
        f"data.val_files={data_dir / 'sft_test.parquet'}",
        "data.messages_key=messages",
        f"data.train_batch_size={sft['train_batch_size']}",
        f"data.micro_batch_size_per_gpu={sft['micro_batch_size_per_gpu']}",
        f"data.max_length={sft['max_length']}",
        "data.truncation=error",
        f"model.path={base_model}",
        f"optim.lr={sft['lr']}",
        f"optim.lr_warmup_steps_ratio={sft['lr_warmup_steps_ratio']}",
        f"optim.lr_scheduler_type={sft.get('lr_scheduler', 'constant')}",
        f"trainer.total_epochs={sft['total_epochs']}",
        f"trainer.save_freq={sft['save_freq']}",
        f"trainer.test_freq={sft['test_freq']}",
        f"trainer.seed={seed}",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.project_name=llm-bridge",
        f"trainer.experiment_name={sft.get('experiment_name', 'sft')}",
        "trainer.resume_mode=auto",
        f"trainer.nnodes={cluster['nnodes']}",
        f"trainer.n_gpus_per_node={cluster['procs_per_node']}",
    ]
    if cluster["gpus_per_node"] == 0:
        args += CPU_OVERRIDES
    else:
        args += launch.attention_fallback(sft.get("overrides", []), [""])
    return args + list(sft.get("overrides", []))


# What verl's SFT needs on CPU (../shared/docs/verl-on-cpu.md): the CPU device, FSDP2 (FSDP1 moves modules to
# cuda), SDPA attention (flash-attn is GPU-only), no padding removal (needs flash-attn), float32 compute, no
# dataloader workers (2 cores), no torch.compile (slow to start for a model that trains in seconds).
CPU_OVERRIDES = [
    "trainer.device=cpu",
    "engine.strategy=fsdp2",
    "engine.dtype=float32",
    "engine.use_torch_compile=False",
    "+model.override_config.attn_implementation=sdpa",
    "model.use_remove_padding=False",
    "model.enable_gradient_checkpointing=False",
    "data.num_workers=0",
]


def torchrun_command(cluster: dict, overrides: list[str]) -> list[str]:
    """One torchrun per node. Single node: --standalone. Several nodes (inside a SLURM allocation, one task per
    node through srun): c10d rendezvous on the allocation's first node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cluster['procs_per_node']}"]
    if cluster["nnodes"] == 1:
        cmd.append("--standalone")
    else:
        # the first node hosts the rendezvous store, the others only join: said explicitly, since torch's guess
        # (does the endpoint name this machine?) is wrong when nodes share a host or resolve to loopback
        cmd += [f"--nnodes={cluster['nnodes']}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={cluster['rdzv_host']}:{cluster['rdzv_port']}", f"--rdzv_id={cluster['rdzv_id']}",
                f"--rdzv_conf=is_host={1 if cluster.get('node_rank', 0) == 0 else 0}"]
    return cmd + ["-m", "verl.trainer.sft_trainer"] + overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {sft: ..., cluster: ..., seed: ...}")
    parser.add_argument("--base-model", required=True, type=Path)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--log", type=Path, help="the stage log, verl's whole output (default <out-dir>/train.log; node k > 0: <log>-node<k>)")
    args = parser.parse_args(argv)
    args.log = args.log or args.out_dir / "train.log"
    params = json.loads(args.params)
    cluster = dict(params["cluster"], **launch.rendezvous())
    node_rank = cluster.get("node_rank", 0)
    log = args.log if node_rank == 0 else args.log.with_name(f"{args.log.stem}-node{node_rank}{args.log.suffix}")
    console.tee_stdout(log)
    if cluster["nnodes"] > 1 and cluster.get("step_nnodes") != cluster["nnodes"]:
        raise InputError(f"this preset spans {cluster['nnodes']} nodes, but this runs on {cluster.get('step_nnodes', 1)}: start it "
                         f"once per node inside a SLURM allocation of {cluster['nnodes']} nodes, as the sft rule does with "
                         "`snakemake --profile slurm` (srun --ntasks-per-node=1)")
    work = args.out_dir / "checkpoints"
    overrides = verl_overrides(params["sft"], args.base_model.resolve(), args.data_dir.resolve(), work.resolve(), cluster, params["seed"])
    inputs = launch.input_stamp([args.base_model.resolve(), *(args.data_dir.resolve() / f for f in ("sft_train.parquet", "sft_test.parquet"))],
                                [Path(__file__), Path(launch.__file__)])  # rules/sft.smk's code
    settings = {"overrides": overrides, "cluster": params["cluster"], "inputs": inputs}
    if node_rank == 0:  # one node decides whether the checkpoints are kept; the others wait for its stamp
        resume_step = launch.prepare_work_dir(work, settings)
    else:
        resume_step = launch.wait_for_work_dir(work, settings, params["stall_timeout_s"])
    where = f"node {node_rank} of {cluster['nnodes']}: " if cluster["nnodes"] > 1 else ""
    print(f"[sft] {where}{f'resuming from step {resume_step}' if resume_step else 'starting from step 0'}; checkpoints in {work}", flush=True)
    logger, logger_env = launch.loggers(params.get("logging", {}), args.out_dir)
    # hydra's own run folder (config snapshot, .hydra/) goes beside the stage's outputs, not into the cwd
    overrides += [logger, f"hydra.run.dir={(args.out_dir / 'hydra').resolve()}"]
    metrics_path = metrics.new_log_path(work)
    env = launch.child_env({**params.get("env", {}), **logger_env, "VERL_FILE_LOGGER_PATH": str(metrics_path)},
                           cluster["procs_per_node"], verl_modules=("llm_bridge.verl_fixes",))
    total = launch.planned_steps(params["sft"], args.data_dir / "sft_train.parquet")
    progress = console.StageProgress("sft", metrics_path, total, resume_step) if node_rank == 0 else None
    launch.run(torchrun_command(cluster, overrides), env, log, params["stall_timeout_s"], "verl SFT", progress)
    if node_rank != 0:
        return  # the first node writes the result (verl's last save ends in a barrier: every rank is done)
    checkpoint, steps = launch.write_result("sft", args.out_dir, work, resume_step)
    final = steps[-1] if steps else {}
    print(f"[sft] done: {checkpoint} (train/loss {final.get('train/loss', float('nan')):.4f})")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_main(main)
