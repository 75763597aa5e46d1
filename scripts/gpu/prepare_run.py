"""Inputs for a GPU run without network (scripts/gpu/run_on_device.sh), and the params the rules would pass.

  data:   the project's raw_data and parquet stages on real GSM8K, and a base model with the exact
          Llama-3.2-1B-Instruct shape, randomly initialised (weights cannot be downloaded there), with a BPE
          tokenizer trained on the GSM8K train split (llm_bridge.base_model.train_tokenizer)
  params: the --params JSON that rules/sft.smk would pass for a preset (stage_settings + cluster + env)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))
# meta-llama/Llama-3.2-1B-Instruct config.json, less the token ids (ours come from our tokenizer).
LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                   rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
                   rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"})


def config_for(gsm8k: Path, max_prompt_length: int) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["data"].update(source="local", max_prompt_length=max_prompt_length,
                          local={"train": str(gsm8k / "train.jsonl"), "test": str(gsm8k / "test.jsonl")})
    return config


def stage(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"llm_bridge.{module}", *args], check=True)


def build_model(raw_train: Path, out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_bridge.base_model import train_tokenizer
    from llm_bridge.raw_data import read_records

    texts = [f"{r['question']} {r['answer']}" for r in read_records(raw_train)]
    tokenizer = train_tokenizer(texts, 32000)  # GSM8K text saturates well below Llama's 128k vocabulary
    # Fill the 128,256 rows with reserved tokens, as Llama 3's own tokenizer does. With fewer ids than rows, verl's
    # rollout (vLLM behind its server) scores tokens over the tokenizer's ids and the actor over all rows: verl's
    # rollout_corr/kl then read ln(128256 / 23007) = 1.72 (measured 1.707 on the H200, 2026-12-02) instead of ~0.
    tokenizer.add_tokens([f"<|reserved_{i}|>" for i in range(LLAMA_32_1B["vocab_size"] - len(tokenizer))],
                         special_tokens=True)
    config = LlamaConfig(**LLAMA_32_1B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, torch_dtype="bfloat16")
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"[prepare] Llama-3.2-1B shape: {n:,} parameters, tokenizer {len(tokenizer)} tokens -> {out}")


def data(gsm8k: Path, work: Path, max_prompt_length: int) -> None:
    config = config_for(gsm8k, max_prompt_length)
    stage("raw_data", "--params", json.dumps({"data": config["data"], "seed": config["seed"]}),
          "--out-dir", str(work / "raw_data"))
    if not (work / "base_model" / "config.json").exists():
        build_model(work / "raw_data" / "train.jsonl", work / "base_model", config["seed"])
    stage("parquet", "--params", json.dumps({k: config["data"][k] for k in ("max_prompt_length", "instruction")}),
          "--raw-dir", str(work / "raw_data"), "--tokenizer", str(work / "base_model"), "--out-dir", str(work / "parquet"))
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "base_model")
    rows = pq.read_table(work / "parquet" / "sft_train.parquet").to_pylist()[:2000]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    (work / "parquet" / "lengths.json").write_text(json.dumps(lengths))
    print(f"[prepare] SFT examples: mean {sum(lengths) / len(lengths):.0f} tokens, max {max(lengths)}")


def params(preset_name: str, stage_name: str, gsm8k: Path, max_prompt_length: int, extra: list[str]) -> str:
    """The JSON rules/{sft,ppo}.smk pass to the stage module, for this preset (see rules/common.smk)."""
    preset = yaml.safe_load((REPO / "config" / "presets" / f"{preset_name}.yaml").read_text())
    return params_for(preset, stage_name, gsm8k, max_prompt_length, extra)


def params_for(preset: dict, stage_name: str, gsm8k: Path, max_prompt_length: int, extra: list[str]) -> str:
    """params() for a preset given as a dict (bench/bench_ppo_gpu.py varies one preset's values)."""
    from llm_bridge.fit import stage_settings

    config = config_for(gsm8k, max_prompt_length)
    config[stage_name]["overrides"] = list(config[stage_name].get("overrides", [])) + extra
    out = {stage_name: stage_settings(config, preset, stage_name), "seed": config["seed"],
           "cluster": {k: preset[k] for k in ("nnodes", "gpus_per_node", "procs_per_node")},
           "stall_timeout_s": preset["stall_timeout_s"],
           "logging": {**config.get("logging", {}), "wandb": "disabled"}}  # wandb is not among the carried wheels
    if stage_name == "ppo":
        out["max_prompt_length"] = config["data"]["max_prompt_length"]
    if preset.get("env"):
        out["env"] = {k: str(v) for k, v in preset["env"].items()}
    return json.dumps(out, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["data", "params"])
    parser.add_argument("--gsm8k", type=Path, default=REPO / ".gpu" / "gsm8k")
    parser.add_argument("--work", type=Path, default=REPO / ".gpu" / "work")
    parser.add_argument("--max-prompt-length", type=int, default=512)  # the seed's
    parser.add_argument("--preset", default="h200x1")
    parser.add_argument("--stage", default="sft", choices=["sft", "ppo"])
    parser.add_argument("--override", action="append", default=[], help="extra verl override (e.g. fewer steps)")
    args = parser.parse_args()
    if args.what == "data":
        data(args.gsm8k, args.work, args.max_prompt_length)
    else:
        print(params(args.preset, args.stage, args.gsm8k, args.max_prompt_length, args.override))


if __name__ == "__main__":
    main()
