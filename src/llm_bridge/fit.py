"""Memory fit check: does a GPU preset's training fit in its GPUs' memory? Run when the Snakefile loads, so an
impossible preset is refused before any GPU time is spent, with the knob to turn.

Estimate per GPU (bytes), FSDP full-shard over all ranks (verl's default):
  states      N * 4 * p / world      params, grads, Adam m and v in engine.model_dtype (p = 4 for fp32)
  unsharded   2 wrapped layers in bf16 + fp32 grads, and the root unit (embeddings, lm_head) while it is gathered
  activations T * L * (16d + 8kv + 8i)   T tokens per micro batch; with gradient checkpointing only the layer
                                         inputs (2d per layer) plus one layer's full set are kept
  logits      T * V * 10             bf16 logits, their fp32 copy and fp32 log-probs (fused kernels: 512-token chunks)
  reserve     1.5 GiB + 5 %          CUDA context, NCCL buffers, allocator fragmentation
On the recorded 1 x H200 runs (1.24B, 8192 tokens per micro batch; ../shared/docs/verl-on-the-gpu-machine.md)
this gives 42 GiB without and 31 GiB with checkpointing, against 40 and 25 GiB measured: an upper bound that
refuses the impossible, not a planner.
"""
from __future__ import annotations

import json
from pathlib import Path

from llm_bridge.errors import InputError

# Shapes of hub models whose config.json may not be on this machine (from their config.json on the Hub).
KNOWN_SHAPES = {
    "meta-llama/Llama-3.2-1B-Instruct": (128256, 2048, 8192, 16, 32, 8, True),
    "meta-llama/Llama-3.2-3B-Instruct": (128256, 3072, 8192, 28, 24, 8, True),
    "meta-llama/Llama-3.1-8B-Instruct": (128256, 4096, 14336, 32, 32, 8, False),
    "Qwen/Qwen2.5-0.5B-Instruct": (151936, 896, 4864, 24, 14, 2, True),
    "Qwen/Qwen2.5-1.5B-Instruct": (151936, 1536, 8960, 28, 12, 2, True),
    "Qwen/Qwen2.5-3B-Instruct": (151936, 2048, 11008, 36, 16, 2, True),
    "Qwen/Qwen2.5-7B-Instruct": (152064, 3584, 18944, 28, 28, 4, False),
}
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "tie_word_embeddings")
GIB = 1024**3
FUSED_CHUNK = 512  # verl's FusedLinearForPPO chunk


def model_shape(model: dict, workdir: Path = Path(".")) -> dict | None:
    """The transformer shape from config: tiny shape, a local config.json, or the known-shapes table; None if
    unknown (a hub id not in the table and not downloaded): then the check is skipped."""
    if model["source"] == "tiny":
        return {"tie_word_embeddings": True, **model["tiny"]}
    if model["source"] == "local" and model.get("local"):
        path = workdir / model["local"] / "config.json"
        return {k: v for k, v in json.loads(path.read_text()).items() if k in SHAPE_KEYS} if path.exists() else None
    hub_id = model.get("hub", {}).get("id")
    return dict(zip(SHAPE_KEYS, KNOWN_SHAPES[hub_id])) if hub_id in KNOWN_SHAPES else None


def param_count(s: dict) -> tuple[int, int]:
    """(all parameters, parameters of one decoder layer) of a Llama/Qwen-style decoder."""
    d, i, v = s["hidden_size"], s["intermediate_size"], s["vocab_size"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    layer = 2 * d * d + 2 * d * kv + 3 * d * i + 2 * d
    embed = v * d * (1 if s.get("tie_word_embeddings", True) else 2)
    return embed + s["num_hidden_layers"] * layer + d, layer


def stage_settings(config: dict, preset: dict, stage: str) -> dict:
    """A stage's config section with the preset's values on top; `overrides` lists are joined, the preset's
    first, so a run's own overrides still win (hydra applies them in order). rules/common.smk uses this too."""
    merged = {**config[stage], **preset.get(stage, {})}
    merged["overrides"] = list(preset.get(stage, {}).get("overrides", [])) + list(config[stage].get("overrides", []))
    return merged


def parameter_count(model: dict, workdir: Path = Path(".")) -> int:
    """Parameters of the configured model; InputError when its shape is unknown here (used by checks.check_disk)."""
    shape = model_shape(model, workdir)
    if shape is None:
        raise InputError(f"model shape unknown for {model.get('hub', {}).get('id') or model.get('local')}")
    return param_count(shape)[0]


def overrides_dict(overrides: list[str]) -> dict[str, str]:
    """verl/hydra overrides as {key: value}, leading '+' dropped; later ones win, as in hydra."""
    out = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        out[key] = value
    return out


def _flag(opts: dict, key: str, default: bool) -> bool:
    return opts[key].strip().lower() in ("true", "1", "yes") if key in opts else default


def training_bytes(shape: dict, world: int, tokens: int, opts: dict, prefix: str = "") -> dict[str, float]:
    """Per-GPU bytes of one training model (SFT model, PPO actor or critic) by part; `prefix` is the verl
    config path of the model ("" for SFT, "actor_rollout_ref." / "critic." for PPO)."""
    n, layer = param_count(shape)
    d, i, v, n_layers = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"], shape["num_hidden_layers"]
    kv = d // shape["num_attention_heads"] * shape["num_key_value_heads"]
    engine = {"": "engine.", "actor_rollout_ref.": "actor_rollout_ref.actor.fsdp_config.", "critic.": "critic.fsdp."}[prefix]
    p = 2 if opts.get(engine + "model_dtype", "fp32") in ("bf16", "bfloat16") else 4
    offload = _flag(opts, engine + "offload_policy", False)
    ckpt = _flag(opts, prefix + "model.enable_gradient_checkpointing", True)
    fused = _flag(opts, prefix + "model.use_fused_kernels", False)
    root = v * d * (1 if shape.get("tie_word_embeddings", True) else 2)
    per_layer_token = 16 * d + 8 * kv + 8 * i
    parts = {
        "states": 0.0 if offload else n * 4 * p / world,
        "unsharded": 2 * layer * (2 + 4) + root * (2 + 4),
        "activations": tokens * (n_layers * 2 * d + per_layer_token) if ckpt else tokens * n_layers * per_layer_token,
        "logits": min(tokens, FUSED_CHUNK) * v * 16 if fused else tokens * v * 10,
    }
    return parts


def sft_tokens(sft: dict, opts: dict) -> int:
    """Tokens in one micro batch: the dynamic-batch budget, or micro batch x max_length when padded."""
    max_length = int(opts.get("data.max_length", sft["max_length"]))  # an override in the list wins
    if _flag(opts, "data.use_dynamic_bsz", True):  # verl's sft_trainer default
        return max(int(opts.get("data.max_token_len_per_gpu", 8192)), max_length)
    return int(opts.get("data.micro_batch_size_per_gpu", sft["micro_batch_size_per_gpu"])) * max_length


def verdict(what: str, parts: dict[str, float], gpu: dict, world: int, knobs: str) -> list[str]:
    need = sum(parts.values()) * 1.05 + 1.5 * GIB
    have = gpu["memory_gib"] * GIB
    if need <= have:
        return []
    detail = ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items())
    if parts["states"] > 0.8 * have:  # no activation setting can help: shard wider or leave the GPU
        knobs = (f"Use more GPUs (the weights, gradients and Adam states alone are {parts['states'] * world / GIB:.0f} GiB, "
                 f"{parts['states'] / GIB:.1f} GiB on each of {world}), or offload them to CPU with "
                 f"engine.strategy=fsdp2 engine.offload_policy=True, or train LoRA (model.lora_rank)")
    return [f"{what} does not fit on a {gpu['name']} ({gpu['memory_gib']} GiB): about {need / GIB:.0f} GiB per GPU "
            f"needed ({detail} GiB). {knobs}"]


def check_fit(config: dict, preset: dict, workdir: Path = Path(".")) -> list[str]:
    """Problems (empty when it fits, when the preset has no GPU, or when the model shape is unknown)."""
    gpu = preset.get("gpu")
    if not preset["gpus_per_node"] or not gpu:
        return []
    shape = model_shape(config["model"], workdir)
    if shape is None:
        return []
    world = preset["nnodes"] * preset["gpus_per_node"]
    sft = stage_settings(config, preset, "sft")
    opts = overrides_dict(sft["overrides"])
    problems = verdict(f"sft ({world} GPUs)", training_bytes(shape, world, sft_tokens(sft, opts), opts), gpu, world,
                       "Turn one of: lower sft.micro_batch_size_per_gpu (or data.max_token_len_per_gpu with dynamic "
                       "batches), keep model.enable_gradient_checkpointing=True, set model.use_fused_kernels=True "
                       "(no full logits), use more GPUs, or engine.strategy=fsdp2 engine.offload_policy=True.")
    ppo = stage_settings(config, preset, "ppo")
    if ppo.get("enabled"):
        popts = overrides_dict(ppo["overrides"])
        tokens = ppo["ppo_micro_batch_size_per_gpu"] * (config["data"]["max_prompt_length"] + ppo["max_response_length"])
        actor = training_bytes(shape, world, tokens, popts, "actor_rollout_ref.")
        critic = training_bytes(shape, world, tokens, popts, "critic.")
        # Actor and critic are colocated; their states stay resident while the other one trains.
        both = {k: actor[k] + (critic[k] if k == "states" else 0) for k in actor}
        problems += verdict(f"ppo actor + critic ({world} GPUs)", both, gpu, world,
                            "Turn one of: lower ppo.ppo_micro_batch_size_per_gpu, enable gradient checkpointing "
                            "(actor_rollout_ref.model / critic.model .enable_gradient_checkpointing=True), or use "
                            "more GPUs.")
        rollout = ppo.get("gpu_memory_utilization", 0.4)
        if rollout >= 0.95:
            problems.append(f"ppo.gpu_memory_utilization={rollout} leaves nothing for the actor's weights while vLLM "
                            "generates; use 0.4-0.6")
    return problems


def estimate_gib(config: dict, preset: dict, workdir: Path = Path(".")) -> float | None:
    """The SFT estimate in GiB (for the benchmark table beside the measured peak)."""
    shape = model_shape(config["model"], workdir)
    if shape is None or not preset["gpus_per_node"]:
        return None
    world = preset["nnodes"] * preset["gpus_per_node"]
    sft = stage_settings(config, preset, "sft")
    opts = overrides_dict(sft["overrides"])
    return (sum(training_bytes(shape, world, sft_tokens(sft, opts), opts).values()) * 1.05 + 1.5 * GIB) / GIB
