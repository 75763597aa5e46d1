"""Same config and seed, two separate runs: byte-identical parquet and tiny base model, and the same SFT loss
curve within 1e-3 relative (CPU float32; exact here, the tolerance allows other BLAS builds)."""
from __future__ import annotations

import json

import pytest

from conftest import default_config, light_sft, snakemake, write_config
from llm_bridge.provenance import sha256_path

pytestmark = pytest.mark.e2e

ARTIFACTS = ["raw_data/train.jsonl", "parquet/train.parquet", "parquet/test.parquet", "parquet/sft_train.parquet",
             "base_model/model.safetensors", "base_model/tokenizer.json", "base_model/config.json"]


def test_two_runs_are_identical(tmp_path):
    config = default_config()
    config["run_name"] = "det"
    config["data"]["synthetic"].update(n_train=256, n_test=16)  # the SFT answer styles' draw is checked too
    light_sft(config)["sft"].update(total_epochs=1, save_freq=-1)
    runs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        snakemake(workdir, write_config(workdir / "config.yaml", config), "sft")
        runs.append(workdir / "runs" / "det")
    for artifact in ARTIFACTS:
        assert sha256_path(runs[0] / artifact) == sha256_path(runs[1] / artifact), artifact
    curves = [[m["train/loss"] for m in json.loads((run / "sft" / "result.json").read_text())["metrics"]] for run in runs]
    assert len(curves[0]) == len(curves[1]) == 256 // 32
    assert curves[0] == pytest.approx(curves[1], rel=1e-3)
