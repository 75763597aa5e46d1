"""Stage `base_model`: the model training starts from, as a Hugging Face folder.

`tiny` (embedded default): a byte-level BPE tokenizer trained on the train split plus a randomly initialised
small Llama with a chat template, deterministic from the seed. `hub`: `huggingface_hub.snapshot_download` at
a pinned revision (token from HF_TOKEN or the login cache, for gated models). `local`: an existing folder,
checked for weights and tokenizer.

    python -m llm_bridge.base_model --params '<json>' --raw-dir runs/tiny/raw_data --out-dir runs/tiny/base_model
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from llm_bridge import atomic
from llm_bridge.errors import InputError

# Llama-3-style chat template, trimmed: the prompt ends with the assistant header, the answer with <|eot|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{% if message['role'] == 'assistant' %}<|eot|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eot|>", "<|user|>", "<|assistant|>", "<|system|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Digits split one by one: arithmetic is learnable when "12" and "21" share their pieces.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # its bar prints blank lines into a pipe
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eot|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE
    )


def build_tiny(shape: dict, raw_train: Path, seed: int, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_bridge.raw_data import read_records

    records = read_records(raw_train)
    texts = [f"{r['question']} {r['answer']}" for r in records]
    tokenizer = train_tokenizer(texts, shape["vocab_size"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        max_position_embeddings=shape["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"[base_model] tiny Llama: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tokenizer)}")


def download(hub: dict, out: Path) -> None:
    from huggingface_hub import snapshot_download

    # The token is read by huggingface_hub itself (HF_TOKEN or `hf auth login`), never passed around here.
    snapshot_download(repo_id=hub["id"], revision=hub["revision"], local_dir=out,
                      allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"])


def check_model_folder(path: Path) -> None:
    """A usable base model has a config, weights and a tokenizer; say which is missing."""
    if not path.is_dir():
        raise InputError(f"{path}: model folder not found (config model.local).")
    missing = []
    if not (path / "config.json").exists():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.append("weights (*.safetensors)")
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        missing.append("tokenizer (tokenizer.json)")
    if missing:
        raise InputError(f"{path}: not a complete Hugging Face model folder, missing {', '.join(missing)}."
                         " Save it with save_pretrained for both model and tokenizer.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {model: ..., seed: ...}")
    parser.add_argument("--raw-dir", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    model = params["model"]
    with atomic.atomic_path(args.out_dir, is_dir=True) as tmp:
        if model["source"] == "tiny":
            build_tiny(model["tiny"], args.raw_dir / "train.jsonl", params["seed"], tmp)
        elif model["source"] == "hub":
            download(model["hub"], tmp)
        else:
            check_model_folder(Path(model["local"]))
            shutil.copytree(model["local"], tmp, dirs_exist_ok=True)
        check_model_folder(tmp)


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
