"""Bad input is refused early and clearly: each case names the file/field/row and what to do, and fails before
any training starts. docs/bad-inputs.md lists the same cases with the message each gets."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import default_config, snakemake, write_config

GOOD = {"question": "Ava has 2 pens and gets 3 more. How many pens?", "answer": "2 + 3 = 5\n#### 5"}


def cfg(**changes) -> dict:
    """The default config with dotted-path changes, e.g. cfg(**{"sft.lr": "fast"})."""
    config = copy.deepcopy(default_config())
    for dotted, value in changes.items():
        node, *path, last = [config, *dotted.split(".")]
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return config


def local_data(tmp: Path, train_lines: list[str], fmt: str = "jsonl") -> dict:
    train = tmp / f"train.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(train_lines), train)
    else:
        train.write_text("".join(line + "\n" for line in train_lines))
    test = tmp / "test.jsonl"
    test.write_text(json.dumps(GOOD) + "\n")
    return cfg(**{"data.source": "local", "data.local": {"train": str(train), "test": str(test)}})


def model_folder(tmp: Path, files: list[str]) -> dict:
    folder = tmp / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    return cfg(**{"model.source": "local", "model.local": str(folder)})


# (case id, config builder, substrings the error must contain). Config-level cases fail in the dry run.
CONFIG_CASES = [
    ("typo-top-level-key", lambda t: {**cfg(), "sft_lr": 0.1}, ["sft_lr in config.yaml is not a setting; did you mean sft.lr?"]),
    ("typo-nested-key", lambda t: cfg(**{"sft.learning_rate": 0.1}), ["sft.learning_rate in config.yaml is not a setting; did you mean sft.lr?"]),
    ("wrong-type", lambda t: cfg(**{"sft.lr": "fast"}), ["sft.lr in config.yaml is 'fast', but it must be a number > 0"]),
    ("zero-batch", lambda t: cfg(**{"sft.train_batch_size": 0}), ["sft.train_batch_size in config.yaml is 0, but it must be at least 1"]),
    ("negative-micro-batch", lambda t: cfg(**{"sft.micro_batch_size_per_gpu": -4}), ["sft.micro_batch_size_per_gpu in config.yaml is -4, but it must be at least 1"]),
    ("zero-ppo-batch", lambda t: cfg(**{"ppo.train_batch_size": 0}), ["ppo.train_batch_size in config.yaml is 0, but it must be at least 1"]),
    ("negative-lr", lambda t: cfg(**{"sft.lr": -1e-3}), ["sft.lr in config.yaml is -0.001, but it must be greater than 0"]),
    ("micro-larger-than-batch", lambda t: cfg(**{"sft.micro_batch_size_per_gpu": 64}), ["sft.micro_batch_size_per_gpu=64", "lower it"]),
    ("ppo-mini-larger-than-batch", lambda t: cfg(**{"ppo.ppo_mini_batch_size": 64}), ["ppo.ppo_mini_batch_size=64", "ppo.train_batch_size=32"]),
    ("ppo-batch-not-divisible", lambda t: cfg(**{"ppo.train_batch_size": 24}), ["ppo.train_batch_size=24 is not divisible by ppo.ppo_mini_batch_size=16"]),
    ("ppo-micro-not-dividing-mini", lambda t: cfg(**{"ppo.ppo_micro_batch_size_per_gpu": 3}), ["ppo_micro_batch_size_per_gpu=3", "does not divide"]),
    ("max-length-below-prompts", lambda t: cfg(**{"sft.max_length": 64}), ["sft.max_length=64", "data.max_prompt_length=96"]),
    ("sequence-beyond-model", lambda t: cfg(**{"ppo.max_response_length": 500}), ["max_position_embeddings=512", "shorten"]),
    ("unknown-preset", lambda t: cfg(preset="h900x64"), ["unknown preset 'h900x64'", "cpu"]),
    ("too-many-synthetic-problems", lambda t: cfg(**{"data.synthetic.n_train": 50000}), ["data.synthetic", "at most 40000 distinct"]),
    ("unknown-data-source", lambda t: cfg(**{"data.source": "s3"}), ["data.source in config.yaml is 's3', but it must be one of synthetic, local, hub"]),
    ("bad-run-name", lambda t: cfg(run_name="../elsewhere"), ["run_name in config.yaml is '../elsewhere'", "does not match"]),
    ("missing-data-file", lambda t: cfg(**{"data.source": "local", "data.local": {"train": str(t / "nope.jsonl"), "test": str(t / "nope.jsonl")}}),
     ["data.local.train", "nope.jsonl does not exist"]),
    ("model-without-weights", lambda t: model_folder(t, ["config.json", "tokenizer.json"]), ["model.local", "weights"]),
    ("model-without-tokenizer", lambda t: model_folder(t, ["config.json", "model.safetensors"]), ["model.local", "tokenizer"]),
    ("upload-without-repo", lambda t: cfg(**{"upload.enabled": True}), ["upload.repo_id is not set"]),
    ("upload-without-token", lambda t: cfg(**{"upload.enabled": True, "upload.repo_id": "team/model"}), ["HF_TOKEN", "hf auth login"]),
]

# Data-level cases: the config is fine, the data is not; they stop at raw_data/parquet, before sft.
DATA_CASES = [
    ("broken-jsonl-line", lambda t: local_data(t, [json.dumps(GOOD), "{oops"]), ["train.jsonl, line 2", "not valid JSON"]),
    ("empty-data-file", lambda t: local_data(t, []), ["train.jsonl", "holds no records"]),
    ("missing-answer-field", lambda t: local_data(t, [json.dumps({"question": "Q?"})]), ["row 0", "field 'answer' is missing"]),
    ("answer-without-marker", lambda t: local_data(t, [json.dumps({"question": "Q?", "answer": "5"})]), ["row 0", "'#### <number>'"]),
    ("non-numeric-ground-truth", lambda t: local_data(t, [json.dumps({"question": "Q?", "answer": "#### 1.2.3"})]), ["row 0", "not a number"]),
    ("duplicate-rows", lambda t: local_data(t, [json.dumps(GOOD), json.dumps(GOOD)]), ["row 1", "duplicate of row 0"]),
    ("prompt-too-long", lambda t: local_data(t, [json.dumps({"question": "many words " * 200, "answer": "#### 1"})]),
     ["row 0", "longer than data.max_prompt_length=96"]),
    ("parquet-missing-column", lambda t: local_data(t, [{"question": "Q?"}], fmt="parquet"), ["train.parquet, row 0", "field 'answer' is missing"]),
]


@pytest.mark.parametrize("case, build, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_refused_before_any_job(tmp_path, monkeypatch, case, build, expected):
    monkeypatch.setenv("HF_TOKEN", "") if case != "upload-without-repo" else None
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no login cache either
    configfile = write_config(tmp_path / "config.yaml", build(tmp_path))
    proc = snakemake(tmp_path, configfile, "all", "--dry-run", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in output, f"{case}: {text!r} not in:\n{output[-3000:]}"
    assert "Job stats" not in output  # refused before planning any job
    assert "Failed validating" not in output and "ValidationError" not in output  # not jsonschema's dump


@pytest.mark.parametrize("case, build, expected", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_stops_before_training(tmp_path, case, build, expected):
    configfile = write_config(tmp_path / "config.yaml", build(tmp_path))
    proc = snakemake(tmp_path, configfile, "all", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in output, f"{case}: {text!r} not in:\n{output[-3000:]}"
    run = tmp_path / "runs" / "tiny"
    assert not (run / "sft").exists() and not (run / "parquet" / "train.parquet").exists()
