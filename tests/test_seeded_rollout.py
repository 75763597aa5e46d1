"""Seeded PPO rollouts (llm_bridge.seeded_rollout): the seed of a request depends only on where it sits in
training, and verl finds the agent loop through the registry file the stage writes."""
from __future__ import annotations

import yaml

from llm_bridge import seeded_rollout


def test_request_seed_is_a_function_of_position_only():
    seeds = {(step, index, sample): seeded_rollout.request_seed(0, step, index, sample)
             for step in range(1, 5) for index in range(8) for sample in range(8)}
    assert len(set(seeds.values())) == len(seeds)  # every sample of every prompt and step draws differently
    assert seeded_rollout.request_seed(0, 3, 5, 2) == seeds[(3, 5, 2)]  # and the same again on a rerun
    assert seeded_rollout.request_seed(1, 3, 5, 2) != seeds[(3, 5, 2)]  # another run seed, other samples
    assert all(0 <= s < 2**31 for s in seeds.values())


def test_verl_loads_the_seeded_agent_loop_from_the_registry_file(tmp_path):
    from hydra.utils import get_class
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    overrides = dict(o.split("=", 1) for o in seeded_rollout.verl_overrides(tmp_path, seed=7))
    assert overrides["actor_rollout_ref.rollout.seed"] == "7"
    [entry] = yaml.safe_load(open(overrides["actor_rollout_ref.rollout.agent.agent_loop_config_path"]))
    assert entry["name"] == overrides["actor_rollout_ref.rollout.agent.default_agent_loop"]
    assert issubclass(get_class(entry["_target_"]), SingleTurnAgentLoop)


def test_lean_vllm_outputs_keep_what_verl_reads():
    """The lean request fields are valid vLLM SamplingParams, and the flat log-probs answer verl's server code
    (`logprobs[token_ids[i]].logprob` per position) with the sampled token's log-prob, as the default lists do."""
    from vllm import SamplingParams
    from vllm.logprobs import append_logprobs_for_next_position, create_sample_logprobs
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=4, logprobs=0, seed=3, **seeded_rollout.lean_vllm_outputs(final_only=True))
    assert (params.detokenize, params.flat_logprobs, params.output_kind) == (False, True, RequestOutputKind.FINAL_ONLY)
    # verl's async trainers wait for each request's first output before a weight update: one output per step there
    assert "output_kind" not in seeded_rollout.lean_vllm_outputs(final_only=False)
    token_ids, sampled = [7, 11, 7], [-0.5, -2.25, -0.125]
    for flat in (True, False):
        logprobs = create_sample_logprobs(flat)
        for token, logprob in zip(token_ids, sampled):
            append_logprobs_for_next_position(logprobs, [token], [logprob], [None], rank=1, num_logprobs=0)
        assert [lp[token_ids[i]].logprob for i, lp in enumerate(logprobs)] == sampled
