"""The embedded default (config/config.yaml, unchanged) learns: the one end-to-end test of an RL stage that
means anything is that reinforcement learning improves the model. A broken reward, zeroed advantages, a weight
sync that leaves vLLM sampling the old policy or an actor that does not update all leave the reward flat and
the PPO model no better than the SFT model; this test then fails.

The margins are issue 13's targets (reward +0.15 from the first to the last quarter of steps, PPO eval accuracy
+10 points over SFT's). The embedded default does not reach them yet (docs/benchmarks.md, "PPO learning"): the
tests are marked as expected failures, strictly, so the day the default learns they pass, the suite reports
XPASS as a failure, and the mark must go. Seed spread was not measured yet: revisit the margins then.

Measured since (docs/benchmarks.md, second session): with seeded rollouts, a run whose policy is frozen traces
the same per-step reward curve as a learning one (the curve is mostly which prompts each step drew), and its
quarter difference alone was +0.009; learning at the best stable settings added +0.02 to +0.04 over the frozen
run in the last quarter. When the default learns, the reward test should compare with a frozen run paired by
step rather than first against last quarter. Over 3 seeds (third session) even the best of those settings (GRPO,
lr 5e-4, KL loss 0.1) came out at +0.004 over its frozen twin on average (-0.012 to +0.053 per run, the same seed
run twice: +0.053 and +0.022), below the SFT model in greedy accuracy: no margin to assert yet.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import default_config, snakemake, write_config
from llm_bridge.metrics import quarter_means

# A whole default chain (about 7 minutes on 2 idle cores) for tests expected to fail today: run on demand
# (LLM_BRIDGE_LEARNING_TEST=1 pytest tests/test_learning.py), and in CI once the default learns.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.environ.get("LLM_BRIDGE_LEARNING_TEST") != "1",
                                                  reason="issue 13: the default does not learn yet; set LLM_BRIDGE_LEARNING_TEST=1")]

REWARD_GAIN_MIN = 0.15    # last-quarter minus first-quarter mean reward
ACCURACY_GAIN_MIN = 0.10  # PPO eval accuracy minus SFT's (greedy, same 200 test problems)
NOT_YET = pytest.mark.xfail(strict=True, reason="issue 13: the embedded default's PPO does not learn measurably yet "
                                                "(2026-12-02: reward 0.156 -> 0.094, eval SFT 17.5 % -> PPO 14.0 %)")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("default")
    configfile = write_config(workdir / "config.yaml", default_config())
    start = time.monotonic()
    snakemake(workdir, configfile, "all")
    return {"run": workdir / "runs" / default_config()["run_name"], "seconds": time.monotonic() - start}


@NOT_YET
def test_ppo_reward_rises(default_run):
    rewards = [s["critic/score/mean"] for s in json.loads((default_run["run"] / "ppo" / "result.json").read_text())["metrics"]]
    first, last = quarter_means(rewards)
    assert last >= first + REWARD_GAIN_MIN, f"PPO reward did not rise: first quarter {first:.3f}, last {last:.3f}, per step {rewards}"


@NOT_YET
def test_ppo_model_beats_sft_model(default_run):
    models = json.loads((default_run["run"] / "evaluate" / "eval.json").read_text())["models"]
    assert models["ppo"]["n"] >= 200
    gain = models["ppo"]["accuracy"] - models["sft"]["accuracy"]
    assert gain >= ACCURACY_GAIN_MIN, f"PPO {models['ppo']['accuracy']:.1%} vs SFT {models['sft']['accuracy']:.1%} on {models['ppo']['n']} problems"
