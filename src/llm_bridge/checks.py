"""Checks across config keys that a JSON schema cannot express, run when the Snakefile loads: an impossible
setting is refused before any job starts, with the key to change and how."""
from __future__ import annotations

from pathlib import Path

from llm_bridge.errors import InputError
from llm_bridge.fit import check_fit


def world_size(preset: dict) -> int:
    return preset["nnodes"] * (preset["gpus_per_node"] or preset["procs_per_node"])


def check_sft(sft: dict, preset: dict, max_prompt_length: int) -> list[str]:
    problems, world = [], world_size(preset)
    if sft["train_batch_size"] % world:
        problems.append(f"sft.train_batch_size={sft['train_batch_size']} is not divisible by the {world} ranks of preset "
                        f"{preset['name']!r}; use a multiple of {world}")
    elif sft["micro_batch_size_per_gpu"] > sft["train_batch_size"] // world:
        problems.append(f"sft.micro_batch_size_per_gpu={sft['micro_batch_size_per_gpu']} is larger than the per-rank batch "
                        f"{sft['train_batch_size'] // world} (sft.train_batch_size / {world} ranks); lower it")
    if sft["max_length"] <= max_prompt_length:
        problems.append(f"sft.max_length={sft['max_length']} leaves no room for answers after prompts of up to "
                        f"data.max_prompt_length={max_prompt_length} tokens; raise sft.max_length")
    return problems


def check_ppo(ppo: dict, preset: dict, max_prompt_length: int, max_positions: int | None) -> list[str]:
    if not ppo["enabled"]:
        return []
    problems, world, n = [], world_size(preset), ppo.get("rollout_n", 1)
    batch, mini, micro = ppo["train_batch_size"], ppo["ppo_mini_batch_size"], ppo["ppo_micro_batch_size_per_gpu"]
    if mini > batch:
        problems.append(f"ppo.ppo_mini_batch_size={mini} is larger than ppo.train_batch_size={batch}; lower it")
    elif batch % mini:
        problems.append(f"ppo.train_batch_size={batch} is not divisible by ppo.ppo_mini_batch_size={mini}")
    if (mini * n) % world:
        problems.append(f"ppo.ppo_mini_batch_size={mini} x rollout_n={n} is not divisible by the {world} ranks; "
                        f"use a multiple of {world}")
    elif (mini * n // world) % micro:
        problems.append(f"ppo.ppo_micro_batch_size_per_gpu={micro} does not divide the per-rank mini batch "
                        f"{mini * n // world} (ppo_mini_batch_size x rollout_n / {world} ranks); lower it")
    total = max_prompt_length + ppo["max_response_length"]
    if max_positions and total > max_positions:
        problems.append(f"data.max_prompt_length + ppo.max_response_length = {total} exceeds the model's "
                        f"max_position_embeddings={max_positions}; shorten one of them")
    return problems


def check_data(data: dict, base: Path) -> list[str]:
    if data["source"] == "synthetic":
        from llm_bridge.raw_data import SYNTHETIC_MAX, synthetic_too_many

        synthetic = data.get("synthetic", {})
        n_train, n_test = synthetic.get("n_train", 0), synthetic.get("n_test", 0)
        return [synthetic_too_many(n_train, n_test)] if n_train + n_test > SYNTHETIC_MAX else []
    if data["source"] != "local":
        return []
    problems = []
    for split in ("train", "test"):
        path = data.get("local", {}).get(split)
        if not path:
            problems.append(f"data.local.{split} is not set; give the path of a GSM8K jsonl or parquet file")
        elif not (base / path).exists():
            problems.append(f"data.local.{split}: {path} does not exist; fix the path or use data.source: synthetic")
    return problems


def check_model(model: dict, base: Path) -> list[str]:
    if model["source"] == "local":
        if not model.get("local"):
            return ["model.local is not set; give the path of a Hugging Face model folder or use model.source: tiny"]
        from llm_bridge.base_model import check_model_folder

        try:
            check_model_folder(base / model["local"])
        except InputError as exc:
            return [f"model.local: {exc}"]
    return []


def check_upload(upload: dict) -> list[str]:
    if not upload["enabled"]:
        return []
    problems = []
    if not upload.get("repo_id"):
        problems.append("upload.enabled is true but upload.repo_id is not set; e.g. upload: {repo_id: my-team/llama-gsm8k}")
    from huggingface_hub import get_token

    if not get_token():  # HF_TOKEN or the login cache; the value itself is never read into our config or logs
        problems.append("upload.enabled is true but no Hugging Face token was found: export HF_TOKEN or run `hf auth login`")
    return problems


def check_disk(run_dir: Path, config: dict) -> list[str]:
    """A checkpoint that cannot be written loses the night's work: refuse to start without room for two."""
    import shutil

    try:
        from llm_bridge.fit import parameter_count

        params = parameter_count(config["model"])
    except (ImportError, InputError, KeyError, OSError):
        return []  # size unknown here (e.g. a Hub id not downloaded yet): the stage itself will fail loudly
    needed = 2 * 16 * params  # fp32 weights + Adam moments + grads, two checkpoints kept
    run_dir = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        return [f"only {free / 2**30:.1f} GiB free under {run_dir}, checkpoints need about {needed / 2**30:.1f} GiB; "
                "free space or point the run elsewhere (run_name / working directory)"]
    return []


def check_all(config: dict, preset: dict, workdir: Path) -> None:
    max_prompt = config["data"]["max_prompt_length"]
    tiny = config["model"].get("tiny", {}) if config["model"]["source"] == "tiny" else {}
    problems = (check_data(config["data"], workdir) + check_model(config["model"], workdir) + check_upload(config["upload"])
                + check_disk(workdir / "runs" / config["run_name"], config)
                + check_sft({**config["sft"], **preset.get("sft", {})}, preset, max_prompt)
                + check_ppo({**config["ppo"], **preset.get("ppo", {})}, preset, max_prompt, tiny.get("max_position_embeddings"))
                + check_fit(config, preset, workdir))
    if problems:
        raise InputError("the configuration cannot run:\n  " + "\n  ".join(problems))
