"""The embedded default (config/config.yaml, unchanged) learns: the one end-to-end test of an RL stage that
means anything is that reinforcement learning improves the model. A broken reward, zeroed advantages, a weight
sync that leaves vLLM sampling the old policy or an actor that does not update all leave the reward flat and
the PPO model no better than the SFT model; this test then fails.

The margins come from the spread measured over 3 seeds (docs/benchmarks.md, "PPO learning"): the smallest
seed's reward gain and accuracy gain, halved, so a working run passes with room and a flat one cannot.
"""
from __future__ import annotations

import json
import time

import pytest

from conftest import default_config, snakemake, write_config
from llm_bridge.metrics import quarter_means

pytestmark = pytest.mark.e2e

REWARD_GAIN_MIN = 0.10   # last-quarter minus first-quarter mean reward
ACCURACY_GAIN_MIN = 0.0  # PPO eval accuracy minus SFT's (greedy, same test problems)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("default")
    configfile = write_config(workdir / "config.yaml", default_config())
    start = time.monotonic()
    snakemake(workdir, configfile, "all")
    return {"run": workdir / "runs" / default_config()["run_name"], "seconds": time.monotonic() - start}


def test_ppo_reward_rises(default_run):
    rewards = [s["critic/score/mean"] for s in json.loads((default_run["run"] / "ppo" / "result.json").read_text())["metrics"]]
    first, last = quarter_means(rewards)
    assert last >= first + REWARD_GAIN_MIN, f"PPO reward did not rise: first quarter {first:.3f}, last {last:.3f}, per step {rewards}"


def test_ppo_model_beats_sft_model(default_run):
    models = json.loads((default_run["run"] / "evaluate" / "eval.json").read_text())["models"]
    assert models["ppo"]["n"] >= 200
    gain = models["ppo"]["accuracy"] - models["sft"]["accuracy"]
    assert gain > ACCURACY_GAIN_MIN, f"PPO {models['ppo']['accuracy']:.1%} vs SFT {models['sft']['accuracy']:.1%} on {models['ppo']['n']} problems"
