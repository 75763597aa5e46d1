"""Repeatable PPO rollouts: verl's single-turn agent loop with a vLLM sampling seed for every request, asking the
vLLM server only for what verl reads back.

verl 0.9.1 seeds vLLM only per engine (`rollout.seed` + replica rank): requests then draw from one shared random
stream in whatever order they reach the engine, which varies with timing, so two runs with the same seed sample
different responses. verl's `rollout.full_determinism` gives every request the *same* seed instead, so the
`rollout.n` samples of one prompt come out identical (no spread for GAE or GRPO to learn from) and it also asks
for vLLM's batch-invariant kernels. Here each request gets its own seed from (rollout.seed, training step,
prompt index, sample number): independent of arrival order, different across samples and steps.

The same loop asks vLLM for lean outputs (`lean_vllm_outputs`): verl reads only a response's final token ids and
log-probs, but by default vLLM decodes the text and each log-prob's token and hands verl's coroutine a cumulative
output after every decode step (256 wake-ups a request for a 256-token response). None of this changes what is
sampled. One output per request only in verl's synchronous trainer: the async ones abort in-flight requests at
each weight update and wait for every request to have sent its first output. `LLM_BRIDGE_FULL_ROLLOUT_OUTPUTS=1`
restores verl's requests (the benchmark's baseline row).

verl loads the class through `actor_rollout_ref.rollout.agent.agent_loop_config_path` (see `config_file`) and
instantiates it in its agent-loop worker; nothing of verl is patched.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from llm_bridge import atomic

AGENT_NAME = "seeded_single_turn_agent"
VERL_VERSION_CHECKED = "0.9.1"


def request_seed(base_seed: int, step: int, index: int, sample: int) -> int:
    """A 31-bit seed, a pure function of where the request sits in training (a hash, so neighbouring steps or
    prompts do not get neighbouring seeds)."""
    digest = hashlib.sha256(f"{base_seed}/{step}/{index}/{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def lean_vllm_outputs(final_only: bool) -> dict[str, Any]:
    """vLLM SamplingParams fields that shape the output, not the sampling: no detokenization (verl decodes the
    ids itself, for the reward), log-probs as one flat array instead of a dict per token, and with final_only one
    output at the end instead of one per decode step."""
    from vllm.sampling_params import RequestOutputKind

    lean = {"detokenize": False, "flat_logprobs": True}
    return {**lean, "output_kind": RequestOutputKind.FINAL_ONLY} if final_only else lean


def config_file(out_dir: Path) -> Path:
    """The agent-loop registry file verl reads (written atomically, once per stage run)."""
    path = out_dir / "agent_loops.yaml"
    atomic.write_text(path, f"- name: {AGENT_NAME}\n  _target_: {__name__}.SeededSingleTurnAgentLoop\n")
    return path


def verl_overrides(out_dir: Path, seed: int) -> list[str]:
    return [f"actor_rollout_ref.rollout.seed={seed}",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={config_file(out_dir).resolve()}",
            f"actor_rollout_ref.rollout.agent.default_agent_loop={AGENT_NAME}"]


@functools.cache
def _agent_loop_class():
    # imported only inside verl's agent-loop worker (hydra instantiates the class there), never by the launcher
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
        async def run(self, sampling_params: dict[str, Any], **kwargs):
            missing = [k for k in ("global_steps", "index", "session_id") if k not in kwargs]
            if missing:  # a verl upgrade renamed what we key on: fail rather than sample unseeded
                raise RuntimeError(f"{__name__}: verl's agent loop no longer passes {missing} (checked with verl "
                                   f"{VERL_VERSION_CHECKED}); the rollout cannot be seeded")
            seed = request_seed(int(self.rollout_config.seed), int(kwargs["global_steps"]), int(kwargs["index"]),
                                int(kwargs["session_id"]))
            params = {**sampling_params, "seed": seed}
            if self.rollout_config.name == "vllm" and os.environ.get("LLM_BRIDGE_FULL_ROLLOUT_OUTPUTS") != "1":
                sync = self.config.trainer.get("v1", {}).get("trainer_mode", "sync") == "sync"
                params.update(lean_vllm_outputs(final_only=sync))
            return await super().run(params, **kwargs)

    return SeededSingleTurnAgentLoop


def __getattr__(name: str):
    if name == "SeededSingleTurnAgentLoop":
        return _agent_loop_class()
    raise AttributeError(name)
