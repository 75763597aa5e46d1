"""Hardware presets (no GPU needed): each loads and validates, resolves to a complete verl command line that verl's
own hydra config accepts (an unknown or misspelt key fails the compose), and the memory fit check refuses an
impossible preset with the knob to turn while accepting the real ones."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from llm_bridge import fit, launch, ppo, sft
from llm_bridge.checks import check_all
from llm_bridge.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "config" / "presets").glob("*.yaml") if p.stem != "schema")
GPU_PRESETS = [p for p in PRESETS
               if yaml.safe_load((REPO / "config" / "presets" / f"{p}.yaml").read_text())["gpus_per_node"] > 0]


def load(name: str) -> dict:
    return {**yaml.safe_load((REPO / "config" / "presets" / f"{name}.yaml").read_text()), "name": name}


def base_config(model: str = "meta-llama/Llama-3.2-1B-Instruct") -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["model"]["source"], config["model"]["hub"]["id"] = "hub", model
    config["data"]["max_prompt_length"] = 512  # the seed's (a real tokenizer's GSM8K prompts exceed the tiny 96)
    return config


def compose(config_name: str, overrides: list[str]):
    """verl's own config, composed by hydra exactly as `python -m verl.trainer.<x> <overrides>` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import verl.trainer

    with initialize_config_dir(config_dir=str(Path(verl.trainer.__file__).parent / "config"), version_base=None):
        return hydra_compose(config_name=config_name, overrides=overrides)


def cluster(preset: dict) -> dict:
    return {k: preset[k] for k in ("nnodes", "gpus_per_node", "procs_per_node")}


def preset_ppo_overrides(preset: dict, tmp_path: Path) -> tuple[dict, list[str]]:
    """The preset's PPO settings and the verl command line llm_bridge.ppo makes of them (seed prompt length)."""
    settings = fit.stage_settings(base_config(), preset, "ppo")
    return settings, ppo.verl_overrides(settings, tmp_path / "sft_model", tmp_path / "data", tmp_path / "ckpt",
                                        cluster(preset), 512, 0)


def bench_ppo_gpu():
    """bench/bench_ppo_gpu.py, the PPO benchmark the GPU sessions run (its rows, their params, a row's run)."""
    import importlib
    import sys

    if str(REPO / "bench") not in sys.path:
        sys.path.insert(0, str(REPO / "bench"))
    return importlib.import_module("bench_ppo_gpu")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_says_how_to_use_it(name):
    schema = yaml.safe_load((REPO / "config" / "presets" / "schema.yaml").read_text())
    preset = yaml.safe_load((REPO / "config" / "presets" / f"{name}.yaml").read_text())
    jsonschema.validate(preset, schema)
    head = (REPO / "config" / "presets" / f"{name}.yaml").read_text().splitlines()[:6]
    assert any("snakemake" in line for line in head), f"{name}.yaml should open with the command that uses it"
    if name in GPU_PRESETS:
        assert preset["gpu"]["memory_gib"] > 0, "a GPU preset names its GPU for the fit check"


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_sft_command_is_accepted_by_verls_own_config(name, tmp_path):
    preset = load(name)
    settings = fit.stage_settings(base_config(), preset, "sft")
    overrides = sft.verl_overrides(settings, tmp_path / "model", tmp_path / "data", tmp_path / "ckpt", cluster(preset), 0)
    cmd = sft.torchrun_command({**cluster(preset), "rdzv_host": "node1", "rdzv_port": 29500, "rdzv_id": "x"}, overrides)
    assert cmd[cmd.index("-m", 2) + 1] == "verl.trainer.sft_trainer"
    assert f"--nproc_per_node={preset['procs_per_node']}" in cmd
    cfg = compose("sft_trainer_engine", overrides)
    assert cfg.trainer.device == "cuda" and cfg.engine.strategy in ("fsdp", "fsdp2")
    assert cfg.trainer.nnodes == preset["nnodes"] and cfg.trainer.n_gpus_per_node == preset["procs_per_node"]
    assert cfg.data.micro_batch_size_per_gpu == settings["micro_batch_size_per_gpu"]
    assert cfg.engine.dtype == "bfloat16"  # bf16 compute on GPUs (the CPU preset computes in fp32)
    assert cfg.optim.lr_scheduler_type == settings["lr_scheduler"] == "cosine"  # the config's key reaches verl
    assert "attn_implementation" in cfg.model.override_config or launch.attention_fallback([], [""]) == []


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_ppo_command_is_accepted_by_verls_own_config(name, tmp_path):
    preset = load(name)
    settings, overrides = preset_ppo_overrides(preset, tmp_path)
    cfg = compose("ppo_trainer", overrides)
    assert cfg.actor_rollout_ref.rollout.name == "vllm"  # production rollout
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == settings["gpu_memory_utilization"]
    assert cfg.trainer.n_gpus_per_node == preset["gpus_per_node"] and cfg.trainer.nnodes == preset["nnodes"]
    assert cfg.data.train_batch_size == settings["train_batch_size"]
    # the critic needs Liger's kernels of its own: in the actor's process the actor's patch reaches only its RoPE
    assert cfg.critic.model.use_liger == cfg.actor_rollout_ref.model.use_liger


@pytest.mark.parametrize("name", ["h200x1", "h200x2", "rtx4090x4"])
def test_gpu_presets_give_verls_engines_a_fused_optimizer(name, tmp_path):
    """The presets' actor and critic take torch's fused AdamW (one kernel; on an H100 42 -> 19 ms a step): verl's
    optimizer builder, fed the composed config's sections, builds it; the benchmark's `tuned-foreach-adam` row builds
    torch's default foreach AdamW instead, so the two can still be measured side by side."""
    import torch
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config.optimizer import build_optimizer

    _, overrides = preset_ppo_overrides(load(name), tmp_path)
    for extra, fused in (([], True), (bench_ppo_gpu().ROWS["tuned-foreach-adam"][1], False)):
        cfg = compose("ppo_trainer", overrides + extra)
        for section in (cfg.actor_rollout_ref.actor.optim, cfg.critic.optim):
            optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(4))], omega_conf_to_dataclass(section))
            assert type(optimizer) is torch.optim.AdamW and bool(optimizer.defaults["fused"]) is fused


def test_cpu_ppo_command_is_accepted_by_verls_own_config(tmp_path):
    """The embedded default's PPO command: verl accepts it, and vLLM's KV cache is sized from the model and the
    rollout batch (it is allocated up front in host RAM on CPU), not vLLM's whole-GiB default."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    settings = fit.stage_settings(config, load("cpu"), "ppo")
    model = tmp_path / "sft_model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 4}')
    prompt = config["data"]["max_prompt_length"]
    cfg = compose("ppo_trainer", ppo.verl_overrides(settings, model, tmp_path / "data", tmp_path / "ckpt", cluster(load("cpu")), prompt, 0))
    assert cfg.trainer.device == "cpu" and cfg.actor_rollout_ref.rollout.name == "vllm"
    kv_bytes = cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes
    per_token = 2 * 4 * 2 * 64 * 4  # K and V x layers x kv heads x head_dim x float32
    batch_tokens = settings["train_batch_size"] * settings.get("rollout_n", 1) * (prompt + settings["max_response_length"])
    assert kv_bytes >= 2 * batch_tokens * per_token  # room for the whole rollout batch, twice
    assert kv_bytes < 2**30  # not vLLM's 1 GiB minimum slice


def test_seed_numbers_are_carried():
    h100 = fit.stage_settings(base_config(), load("h100x8"), "ppo")
    assert (h100["train_batch_size"], h100["max_response_length"], h100["ppo_mini_batch_size"]) == (256, 256, 64)
    assert (h100["actor_lr"], h100["critic_lr"], h100["kl_coef"], h100["gpu_memory_utilization"]) == (1e-6, 1e-5, 0.001, 0.4)
    assert (h100["save_freq"], h100["test_freq"], h100["ppo_micro_batch_size_per_gpu"]) == (10, 10, 4)
    cfg = compose("ppo_trainer", ppo.verl_overrides(h100, Path("m"), Path("d"), Path("c"), cluster(load("h100x8")), 512, 0))
    assert cfg.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu == 8
    assert cfg.data.max_prompt_length == 512
    seed_sft = fit.stage_settings(base_config(), load("h100x8"), "sft")
    assert (seed_sft["micro_batch_size_per_gpu"], seed_sft["total_epochs"]) == (8, 2)
    rtx = load("rtx4090x4")
    assert rtx["env"]["NCCL_IB_DISABLE"] == "1" and rtx["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    assert (rtx["nnodes"], rtx["gpus_per_node"], rtx["sft"]["micro_batch_size_per_gpu"]) == (2, 2, 4)
    assert "model.enable_gradient_checkpointing=True" in rtx["sft"]["overrides"]
    assert load("h100x16")["nnodes"] == 2


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_ppo_samples_as_the_seed(name):
    """The config's PPO sampling (4 responses a prompt at temperature 0.7, two passes over them) is the CPU
    default's, tuned for its tiny model to learn; a GPU preset that let it through would run 4x the seed's rollout
    and twice its updates."""
    settings = fit.stage_settings(base_config(), load(name), "ppo")
    cfg = compose("ppo_trainer", ppo.verl_overrides(settings, Path("m"), Path("d"), Path("c"), cluster(load(name)), 512, 0))
    assert (cfg.actor_rollout_ref.rollout.n, cfg.actor_rollout_ref.rollout.temperature) == (1, 1.0)
    assert (cfg.actor_rollout_ref.actor.ppo_epochs, cfg.critic.ppo_epochs) == (1, 1)
    assert cfg.data.train_batch_size == 256


def test_run_overrides_win_over_the_presets():
    config = base_config()
    config["sft"]["overrides"] = ["data.max_token_len_per_gpu=4096"]
    merged = fit.stage_settings(config, load("h200x1"), "sft")
    assert merged["overrides"][-1] == "data.max_token_len_per_gpu=4096"
    assert compose("sft_trainer_engine", merged["overrides"]).data.max_token_len_per_gpu == 4096


@pytest.fixture(autouse=True)
def no_disk_check(monkeypatch):
    """check_all also wants disk for a 1B model's checkpoints; CI machines may not have it, nor need it here."""
    monkeypatch.setattr("llm_bridge.checks.check_disk", lambda *a, **k: [])


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_fit_accepts_the_real_presets(name):
    check_all(base_config(), load(name), REPO)  # raises InputError if anything, fit included, is refused


def test_fit_refuses_8b_on_4090s_without_checkpointing():
    preset = load("rtx4090x4")
    preset["sft"] = {**preset["sft"], "micro_batch_size_per_gpu": 16,
                     "overrides": ["data.use_dynamic_bsz=False", "model.enable_gradient_checkpointing=False"]}
    with pytest.raises(InputError) as err:
        check_all(base_config("meta-llama/Llama-3.1-8B-Instruct"), preset, REPO)
    message = str(err.value)
    assert "does not fit on a RTX 4090" in message and "more GPUs" in message and "offload" in message


def test_fit_names_the_activation_knobs_when_states_fit():
    preset = load("rtx4090x4")
    preset["sft"] = {**preset["sft"], "micro_batch_size_per_gpu": 16,
                     "overrides": ["data.use_dynamic_bsz=False", "model.enable_gradient_checkpointing=False"]}
    problems = fit.check_fit(base_config(), preset)
    assert len(problems) == 1 and "micro_batch_size_per_gpu" in problems[0] and "gradient_checkpointing" in problems[0]
    preset["sft"]["overrides"] = ["data.use_dynamic_bsz=False", "model.enable_gradient_checkpointing=True"]
    preset["sft"]["micro_batch_size_per_gpu"] = 4
    assert fit.check_fit(base_config(), preset) == []


def test_fit_model_shapes():
    config = base_config()
    assert fit.parameter_count(config["model"]) == 1_235_814_400  # Llama-3.2-1B: 1.24B with tied embeddings
    tiny = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["model"]
    assert fit.model_shape(tiny)["hidden_size"] == tiny["tiny"]["hidden_size"]
    unknown = copy.deepcopy(config)
    unknown["model"]["hub"]["id"] = "someone/unknown-model"
    assert fit.check_fit(unknown, load("rtx4090x4")) == []  # shape unknown here: not refused
    assert fit.check_fit(config, load("cpu")) == []


def test_gpu_support_registers_varlen_attention():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_bridge import gpu_support, logprobs

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation=gpu_support.ATTN_NAME)
    model = LlamaForCausalLM(config)
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert model(input_ids=torch.randint(0, 64, (1, 9)), position_ids=pos).logits.shape == (1, 9, 64)
    cu, longest = gpu_support._boundaries(pos)
    assert cu.tolist() == [0, 3, 5, 9] and longest == 4
    logits, labels = torch.randn(5, 64), torch.randint(0, 64, (5,))
    want = torch.log_softmax(logits, -1).gather(-1, labels[:, None])[:, 0]
    assert torch.allclose(logprobs.logprobs_vectorised(logits, labels), want, atol=1e-5)


def test_liger_kernels_compile_once_for_every_micro_batch_size(tmp_path):
    """Triton compiles an int argument apart for values that divide by 16: a packed micro batch whose row count
    changes class recompiled Liger's RMSNorm backward in the middle of the H200's actor update (0.8 s). Once
    llm_bridge.gpu_support is loaded, Liger's row-count arguments are not specialised when Liger's module is
    imported, and its other arguments still are. Liger is not in the CPU environment: a stand-in module at Liger's
    path holds a kernel with the arguments of Liger 0.8.5's RMSNorm backward, and Triton's own argument binder
    (what picks the compiled kernel) gives the keys."""
    import os

    ops = tmp_path / "liger_kernel" / "ops"
    ops.mkdir(parents=True)
    (tmp_path / "liger_kernel" / "__init__.py").write_text("")
    (ops / "__init__.py").write_text("")
    (ops / "rms_norm.py").write_text(
        "import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
        "def _rms_norm_backward_kernel(dY_ptr, dY_row_stride, n_rows, n_cols, rows_per_program, "
        "BLOCK_SIZE: tl.constexpr):\n    pass\n")
    script = """
import torch
from triton.backends.compiler import BaseBackend
from triton.runtime.jit import create_function_from_signature
from llm_bridge import gpu_support  # before Liger, as verl's plugin variable loads it
import liger_kernel.ops.rms_norm as rms

kernel = rms._rms_norm_backward_kernel
bind = create_function_from_signature(kernel.signature, kernel.params, BaseBackend)
dy = torch.zeros(4)
def key(n_rows, n_cols, rows_per_program):
    return bind(dy, 2048, n_rows, n_cols, rows_per_program, BLOCK_SIZE=2048)[1]
assert key(16 * 2000, 2048, 16 * 15) == key(32001, 2048, 243), "a row count that divides by 16 compiles again"
assert key(32001, 2048, 243) != key(32001, 2047, 243), "n_cols lost its specialisation"
print("ok")
"""
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    assert run_with_verl_fixes(script, PYTHONPATH=path).split()[-1] == "ok"


@pytest.mark.parametrize("attn", ["sdpa", "varlen"])
def test_critic_loads_with_the_configured_attention(tiny_tokenizer_dir, attn, monkeypatch):
    """verl 0.9.1's critic loader asks for flash_attention_2 whatever the config says, and fails without the
    flash_attn package (every CPU, the lent H200); llm_bridge.verl_fixes makes it honour the configured one."""
    import importlib.util

    import torch
    import verl.utils.model as model_utils
    from transformers import AutoConfig

    from llm_bridge import gpu_support  # noqa: F401  (registers "varlen", as VERL_USE_EXTERNAL_MODULES does on GPUs)

    def value_config():
        config = AutoConfig.from_pretrained(tiny_tokenizer_dir, attn_implementation=attn)  # as verl's HFModelConfig
        config.num_labels = 1
        return config

    verl_loader = getattr(model_utils.load_valuehead_model, "__wrapped__", model_utils.load_valuehead_model)
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(RuntimeError, match="not a value head model"):  # verl's own loader, unpatched
            verl_loader(tiny_tokenizer_dir, torch.float32, value_config(), False)
    from llm_bridge import verl_fixes  # noqa: F401

    critic = model_utils.load_valuehead_model(tiny_tokenizer_dir, torch.float32, value_config(), False)
    assert critic.config._attn_implementation == attn
    values = critic(input_ids=torch.tensor([[1, 2, 3, 4]])).logits
    assert values.shape == (1, 4, 1)  # one value per token: the critic's head

    # The new value head is drawn from the run's seed, whatever the process's random state (verl seeds nothing
    # before building the critic), and leaves that state as it was.
    def head(seed: str, process_seed: int) -> torch.Tensor:
        monkeypatch.setenv("LLM_BRIDGE_SEED", seed)
        torch.manual_seed(process_seed)
        state = torch.random.get_rng_state()
        weight = model_utils.load_valuehead_model(tiny_tokenizer_dir, torch.float32, value_config(), False).score.weight
        assert torch.equal(torch.random.get_rng_state(), state)
        return weight.detach()

    assert torch.equal(head("3", process_seed=1), head("3", process_seed=2))
    assert not torch.equal(head("3", process_seed=1), head("4", process_seed=1))


def run_with_verl_fixes(script: str, **env: str) -> str:
    """stdout of `python -c script` in the environment llm_bridge.sft and llm_bridge.ppo give verl's processes
    (verl loads llm_bridge.verl_fixes through its plugin variable), with `env` on top; a failure shows its stderr."""
    import subprocess
    import sys

    full_env = launch.child_env(verl_modules=("llm_bridge.verl_fixes",)) | env
    done = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_responses_are_cut_out_without_a_loop_over_samples():
    """verl 0.9.1's no_padding_2_padding (every PPO loss: the actor's log-probs, the critic's values) loops over the
    samples with three host-device syncs each; llm_bridge.verl_fixes replaces it, where verl's losses import it,
    with one gather. Same values and gradients as verl's loop for packed (nested) and padded batches, values with
    and without a trailing dimension, float32 and bfloat16, a response shorter than the batch's longest."""
    script = """
import torch, verl
from tensordict import TensorDict
from verl.workers.utils import losses, padding
fast, loop = losses.no_padding_2_padding, padding.no_padding_2_padding.__wrapped__
assert fast is padding.no_padding_2_padding and fast is not loop, "verl's losses still use the loop"
torch.manual_seed(0)
prompt_lens, response_lens = [5, 3, 7, 2], [4, 6, 1, 6]
nested = lambda lens: torch.nested.nested_tensor_from_jagged(torch.randint(0, 50, (sum(lens),)),
                                                             offsets=torch.tensor([0] + lens).cumsum(0))
packed = TensorDict({"prompts": nested(prompt_lens), "responses": nested(response_lens)}, batch_size=[4])
mask = torch.zeros(4, 13, dtype=torch.long)
for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
    mask[i, 7 - p:7 + r] = 1
padded = TensorDict({"prompts": torch.zeros(4, 7), "responses": torch.zeros(4, 6), "attention_mask": mask}, batch_size=[4])
rows = sum(prompt_lens) + sum(response_lens)
for data in (packed, padded):
    for shape in ((rows,), (rows, 3)):
        for dtype in (torch.float32, torch.bfloat16):
            base = torch.randn(*shape).to(dtype)
            a, b = base.clone().requires_grad_(), base.clone().requires_grad_()
            out_loop, out_fast = loop(a, data), fast(b, data)
            assert out_fast.shape == out_loop.shape == (4, 6, *shape[1:]) and out_fast.dtype == dtype
            assert torch.equal(out_fast, out_loop), (shape, dtype)
            weights = torch.randn(out_loop.shape).to(dtype)
            (out_loop * weights).sum().backward(); (out_fast * weights).sum().backward()
            assert torch.equal(a.grad, b.grad), (shape, dtype)
print("same")
"""
    assert run_with_verl_fixes(script).split()[-1] == "same"
    # the benchmark's baseline row keeps verl's loop
    check = "from verl.workers.utils import losses, padding; print(hasattr(losses.no_padding_2_padding, '__wrapped__'))"
    assert run_with_verl_fixes(check, LLM_BRIDGE_VERL_PADDING_LOOP="1").split()[-1] == "False"


def test_training_workers_leave_the_per_sample_objects_behind():
    """verl 0.9.1's training workers carry every per-sample Python object of the step batch (uid, reward_model,
    the raw prompt, ...) through each mini-batch split and each micro batch's split and `.to(device)`: 40-50 ms of
    GPU-idle Python a micro batch on the H200. llm_bridge.verl_fixes leaves them behind in both splits. On a batch
    built as verl's trainer builds it: the same tensors in the same micro batches, the batch's metadata kept, the
    objects gone except multi_modal_inputs (the one a worker reads). (What it saves is measured on the GPU:
    docs/benchmarks.md.)"""
    script = """
import numpy as np, torch, verl
from verl import DataProto
from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp import transformer_impl
from verl.workers.utils.padding import left_right_2_no_padding
split, verl_split = transformer_impl.prepare_micro_batches, transformer_impl.prepare_micro_batches.__wrapped__
assert tu.make_iterator.__wrapped__ is not tu.make_iterator
B, P, R = 16, 12, 10
g = torch.Generator().manual_seed(0)
mask = torch.zeros(B, P + R, dtype=torch.long)
for i in range(B):
    mask[i, P - int(torch.randint(3, P, (1,), generator=g)):P + int(torch.randint(2, R, (1,), generator=g))] = 1
ids = torch.randint(5, 90, (B, P + R), generator=g)
batch = DataProto.from_dict(tensors=dict(prompts=ids[:, :P], responses=ids[:, P:], input_ids=ids, attention_mask=mask,
    position_ids=(mask.cumsum(-1) - 1).clamp(min=0), response_mask=mask[:, P:].float(), advantages=torch.randn(B, R)))
objects = dict(uid=[f"u{i}" for i in range(B)], reward_model=[{"ground_truth": str(i)} for i in range(B)],
               raw_prompt=[[{"role": "user", "content": "q" * 50}] for _ in range(B)], multi_modal_inputs=[{}] * B)
batch.non_tensor_batch.update({k: np.array(v + [None], dtype=object)[:-1] for k, v in objects.items()})
data = left_right_2_no_padding(batch.to_tensordict())
tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=64, temperature=1.0)
(lean, lean_idx), (full, full_idx) = split(data=data), verl_split(data=data)
assert len(lean) == len(full) > 1 and lean_idx == full_idx
for a, b in zip(lean, full):
    assert set(b.keys()) - set(a.keys()) == {"uid", "reward_model", "raw_prompt"}, sorted(a.keys())
    assert a["multi_modal_inputs"] is not None and tu.get_non_tensor_data(a, "max_token_len_per_gpu", None) == 64
    for key in ("input_ids", "position_ids", "prompts", "responses", "advantages"):
        assert torch.equal(a[key].values() if a[key].is_nested else a[key], b[key].values() if b[key].is_nested else b[key])
mini = next(iter(tu.make_iterator(data, mini_batch_size=8, epochs=1, seed=0, dataloader_kwargs={"shuffle": False})))
assert "uid" not in mini.keys() and "multi_modal_inputs" in mini.keys() and mini.batch_size[0] == 8
print("same")
"""
    assert run_with_verl_fixes(script).split()[-1] == "same"
    # the benchmark's baseline row keeps verl's splits
    check = "from verl.workers.engine.fsdp import transformer_impl as t; print(hasattr(t.prepare_micro_batches, '__wrapped__'))"
    assert run_with_verl_fixes(check, LLM_BRIDGE_KEEP_SAMPLE_OBJECTS="1").split()[-1] == "False"


def test_mini_and_micro_batches_select_rows_at_once():
    """verl 0.9.1 selects each mini batch's and micro batch's rows of a nested field by unbinding it into one tensor a
    sample (98 ms of GPU-idle Python a PPO update on a 2-core Zen 4); llm_bridge.verl_fixes slices the packed
    values at once. On a batch with nested fields of 1-D and 2-D samples (one ragged in its last dimension, left
    to verl), plain tensors and metadata: the same values, offsets and other fields as verl's for consecutive rows
    (mini batches), scattered rows (micro batches) and a selection of a selection (which reads the offsets kept on
    the host), with the min/max lengths set."""
    script = """
import numpy as np, torch
from tensordict import NonTensorData, TensorDict
from verl.utils import tensordict_utils as tu
select, verl_select = tu.index_select_tensor_dict, tu.index_select_tensor_dict.__wrapped__
g = torch.Generator().manual_seed(0)
lengths = torch.randint(1, 9, (12,), generator=g).tolist()
data = TensorDict({"ids": torch.nested.as_nested_tensor([torch.randint(0, 99, (n,), generator=g) for n in lengths],
                                                        layout=torch.jagged),
                   "hidden": tu.nested_tensor_from_tensor_list([torch.randn(n, 3, generator=g) for n in lengths], 1),
                   "wide": tu.nested_tensor_from_tensor_list([torch.randn(2, n, generator=g) for n in lengths], 2),
                   "score": torch.randn(12, generator=g), "temperature": NonTensorData(0.7)}, batch_size=[12])
def same(a, b):
    assert sorted(a.keys()) == sorted(b.keys()) and a.batch_size == b.batch_size, (a, b)
    for key in ("ids", "hidden"):
        assert torch.equal(a[key].offsets(), b[key].offsets()) and torch.equal(a[key].values(), b[key].values()), key
        lens = a[key].offsets().diff()
        assert (a[key]._min_seqlen, a[key]._max_seqlen) == (lens.min().item(), lens.max().item())
    assert [torch.equal(x, y) for x, y in zip(a["wide"].unbind(), b["wide"].unbind())] == [True] * len(b)  # verl's own
    assert torch.equal(a["score"], b["score"]) and tu.get_non_tensor_data(a, "temperature", None) == 0.7
for rows in ([4, 5, 6, 7], [9, 0, 3, 3, 11], torch.tensor([2, 8])):
    same(select(data, rows), verl_select(data, rows))
same(select(select(data, list(range(8))), [6, 1, 2]), verl_select(verl_select(data, list(range(8))), [6, 1, 2]))
print("same")
"""
    assert run_with_verl_fixes(script).split()[-1] == "same"
    # the benchmark's baseline row keeps verl's selection
    check = "from verl.utils import tensordict_utils as tu; print(hasattr(tu.index_select_tensor_dict, '__wrapped__'))"
    assert run_with_verl_fixes(check, LLM_BRIDGE_VERL_SPLITS="1").split()[-1] == "False"


def test_decoder_layers_compile_whole_to_the_same_numbers():
    """LLM_BRIDGE_COMPILE=1 puts each decoder layer of verl's FSDP engine and the log-probs under torch.compile
    (the benchmark's `tuned-compile` row; off by default). On a tiny Llama through the GPU presets' varlen attention
    (torch's kernel is CUDA-only: this test gives its op a CPU kernel, per-sequence SDPA, forward and backward):
    every layer compiled, each one whole (no graph break: the packed row's boundaries come from before the layers)
    and all layers served by one graph, the same loss and gradients as eager for packed micro batches of three
    lengths, and the third length served by the graphs already built (no compile a micro batch); verl's log-probs
    give the same values and gradients. Without the switch verl's engine builds its model as before."""
    script = """
import copy, torch
import torch.nn.attention.varlen
from transformers import LlamaConfig, LlamaForCausalLM
from torch._dynamo.utils import counters
from llm_bridge import gpu_support
from llm_bridge.gpu_support import compile_decoder_layers
from verl.workers.engine.fsdp import transformer_impl
assert transformer_impl.FSDPEngine._build_fsdp_module.compiles_layers

def attend(q, k, v, cu):  # (T, H, D) packed rows, causal within each sequence
    parts = [torch.nn.functional.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)),
                                                              is_causal=True, enable_gqa=True).transpose(0, 1)
             for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]
    return torch.cat(parts)

@torch.library.register_kernel("torch_attn::_varlen_attn", "cpu")
def forward(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, scale=None, window_size=None):
    return attend(q, k, v, cu_q), torch.zeros(q.shape[1], q.shape[0]), torch.zeros(2, dtype=torch.uint64)

@torch.library.register_kernel("torch_attn::_varlen_attn_backward", "cpu")
def backward(grad, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, is_causal, rng, scale=None, window_size=None):
    return torch.func.vjp(lambda *qkv: attend(*qkv, cu_q), q, k, v)[1](grad)  # below autograd: functorch's own

gpu_support.VARLEN_DEVICES.add("cpu")
torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, attn_implementation="varlen")
eager = LlamaForCausalLM(config)
compiled = copy.deepcopy(eager)
assert compile_decoder_layers(compiled) == 2
graphs = []
for length in (10, 13, 17):
    ids = torch.randint(0, 64, (1, length))
    positions = torch.cat([torch.arange(4), torch.arange(length - 4)])[None]  # two sequences packed in one row
    results = []
    for model in (eager, compiled):
        model.zero_grad()
        # a tensor of its own each (the attention caches the boundaries it computes on the positions tensor)
        loss = model(input_ids=ids, position_ids=positions.clone(), labels=ids, use_cache=False).loss  # as verl
        loss.backward()
        results.append((loss, [p.grad for p in model.parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert torch.allclose(loss_e, loss_c, atol=1e-6), (length, loss_e, loss_c)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads_e, grads_c)), length
    graphs.append(counters["stats"]["unique_graphs"])
assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
assert graphs == [1, 2, 2], graphs  # one graph for both layers; one more when lengths vary; then no more
import verl.utils.torch_functional as tf  # the log-probs verl falls back to, compiled
from llm_bridge.logprobs import logprobs_vectorised
assert tf.logprobs_from_logits_v2._torchdynamo_orig_callable is logprobs_vectorised
for rows in (7, 11):
    logits = torch.randn(1, rows, 50, requires_grad=True)
    labels = torch.randint(0, 50, (1, rows))
    got, want = tf.logprobs_from_logits_v2(logits, labels), logprobs_vectorised(logits, labels)
    grad_got, grad_want = (torch.autograd.grad(x.sum(), logits)[0] for x in (got, want))
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(grad_got, grad_want, atol=1e-6), rows
print("same")
"""
    assert run_with_verl_fixes(script, LLM_BRIDGE_COMPILE="1", LLM_BRIDGE_FAST_LOGPROBS="1").split()[-1] == "same"
    check = "from verl.workers.engine.fsdp import transformer_impl as t; print(hasattr(t.FSDPEngine._build_fsdp_module, 'compiles_layers'))"
    assert run_with_verl_fixes(check).split()[-1] == "False"


def test_triton_logprobs_replace_verls_loop_with_the_fp32_routes_numbers():
    """LLM_BRIDGE_FAST_LOGPROBS=triton puts llm_bridge.logprob_kernel where verl falls back to its per-row loop, and
    its kernels (run by Triton's interpreter on CPU) give the vectorised fp32 route's log-probs and gradients: fp32
    logits to float rounding, bf16 ones to bf16's (their gradient is written in bf16 directly); a vocabulary that is
    not a whole number of blocks, and an ignored label (-100) giving 0 and no gradient, as cross_entropy does."""
    script = """
import torch
import llm_bridge.gpu_support  # installs the switch
from llm_bridge import logprob_kernel
from llm_bridge.logprobs import logprobs_vectorised
import verl.utils.torch_functional as tf
assert tf.logprobs_from_logits_v2 is logprob_kernel.logprobs
torch.manual_seed(0)
vocab = logprob_kernel.BLOCK + 904
for dtype, tol in ((torch.float32, dict(rtol=1e-5, atol=1e-6)), (torch.bfloat16, {})):
    logits = (torch.randn(2, 6, vocab) * 3).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (2, 6))
    labels[1, 2] = -100
    weights = torch.randn(2, 6)  # a weight a token, as PPO's loss gives
    results = []
    for fn in (tf.logprobs_from_logits_v2, logprobs_vectorised):
        out = fn(logits, labels)
        results.append((out, torch.autograd.grad((out * weights).sum(), logits)[0]))
    (got, grad_got), (want, grad_want) = results
    assert got.dtype == torch.float32 and grad_got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_got, grad_want, **tol)
    assert got[1, 2] == 0 and not grad_got[1, 2].any()
print("same")
"""
    assert run_with_verl_fixes(script, LLM_BRIDGE_FAST_LOGPROBS="triton", TRITON_INTERPRET="1").split()[-1] == "same"


def test_an_unknown_logprobs_switch_is_refused_not_ignored():
    """A misspelt LLM_BRIDGE_FAST_LOGPROBS would leave verl's per-token loop in place, 100x slower: a preset with one
    fails the preset schema (checked when the workflow loads), and set by hand it stops gpu_support's import."""
    import subprocess
    import sys

    schema = yaml.safe_load((REPO / "config" / "presets" / "schema.yaml").read_text())
    preset = yaml.safe_load((REPO / "config" / "presets" / "h200x1.yaml").read_text())
    preset["env"]["LLM_BRIDGE_FAST_LOGPROBS"] = "tirton"
    with pytest.raises(jsonschema.ValidationError, match="tirton"):
        jsonschema.validate(preset, schema)
    done = subprocess.run([sys.executable, "-c", "import llm_bridge.gpu_support"], capture_output=True, text=True,
                          env=launch.child_env() | {"LLM_BRIDGE_FAST_LOGPROBS": "tirton"}, timeout=120, check=False)
    assert done.returncode != 0 and "LLM_BRIDGE_FAST_LOGPROBS='tirton': use 0" in done.stderr, done.stderr[-2000:]


def test_training_workers_fetch_no_per_sample_objects():
    """Before any split the objects travel: verl 0.9.1's trainer hands a training-worker call the batch's
    TransferQueue keys with no field list, and the worker fetches every field, the objects pickled with the
    tensors. With llm_bridge.verl_fixes the trainer's calls name the fields workers read. Through a real
    TransferQueue (Ray, a storage unit) and verl's own worker-side fetch: the critic update's worker gets the
    tensors as they were put and multi_modal_inputs, not uid or extra_info, and the trainer's batch goes on with
    the fields it had."""
    script = """
import ray, torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorStack
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
import transfer_queue as tq
tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.utils import transferqueue_utils
n = 6
ids = torch.nested.as_nested_tensor([torch.arange(3 + i) for i in range(n)], layout=torch.jagged)
step = TensorDict({"input_ids": ids, "advantages": torch.randn(n, 4), "uid": NonTensorStack(*[f"u{i}" for i in range(n)]),
                   "extra_info": NonTensorStack(*[{"question": "q" * i} for i in range(n)]),
                   "multi_modal_inputs": NonTensorStack(*[{} for _ in range(n)])}, batch_size=[n])
batch = tq.kv_batch_put(keys=[f"k{i}" for i in range(n)], partition_id="train", fields=step)
fields_before = list(batch.fields)
got = {}
class Handle:
    def get(self):
        return {"metrics": {"mfu": 0.5, "loss": [1.0]}}
class CriticGroup:  # the worker side of a call, as verl's tqbridge runs it: fetch what the meta names
    def train_mini_batch(self, meta):
        got["data"] = transferqueue_utils._meta_to_realdata(transferqueue_utils.kv_batch_meta2batch_meta(meta))
        return Handle()
class Trainer:
    critic_wg = CriticGroup()
    config = OmegaConf.create({"critic": {"ppo_mini_batch_size": 2, "ppo_epochs": 1, "data_loader_seed": 0, "shuffle": False},
                               "actor_rollout_ref": {"rollout": {"n": 1, "temperature": 1.0}}})
metrics = {}
assert PPOTrainer._update_critic(Trainer(), batch, metrics) is batch and metrics["perf/mfu/critic"] == 0.5
data = got["data"]
assert {"input_ids", "advantages", "multi_modal_inputs"} <= set(data.keys()), sorted(data.keys())
assert not {"uid", "extra_info"} & set(data.keys()), sorted(data.keys())
assert torch.equal(data["input_ids"].values(), ids.values())
assert torch.equal(torch.stack(data["advantages"].unbind()), step["advantages"])  # comes back one tensor a sample
assert batch.fields == fields_before
print("lean")
"""
    assert run_with_verl_fixes(script).split()[-1] == "lean"
    # the benchmark's baseline row keeps verl's fetch
    check = ("from verl.trainer.ppo.v1.trainer_base import PPOTrainer as T; "
             "print(getattr(T._update_actor, 'names_worker_fields', False))")
    assert run_with_verl_fixes(check, LLM_BRIDGE_KEEP_SAMPLE_OBJECTS="1").split()[-1] == "False"


def test_built_processes_freeze_their_heap_for_the_garbage_collector():
    """A full garbage collection in a verl process scans everything it built (600,000-790,000 objects, 0.3-0.56 s
    on a 2-core Zen 4), and one that falls in a step stops it. llm_bridge.verl_fixes freezes the heap after the
    training workers build their models, after the rollout's server and agent-loop workers start, and when the
    trainer starts training; verl's remote-call registration of the wrapped methods is kept, a second patch of
    the same module still applies, the freeze comes after a build and before training, and
    LLM_BRIDGE_GC_UNFROZEN=1 keeps verl's methods."""
    script = """
import gc, verl
from llm_bridge import verl_fixes
from verl.single_controller.base.decorator import MAGIC_ATTR
from verl.trainer.ppo.v1 import trainer_base
from verl.workers import engine_workers
for method in (engine_workers.TrainingWorker.reset, engine_workers.ActorRolloutRefWorker.init_model):
    assert method.freezes_heap and getattr(method, MAGIC_ATTR) == getattr(method.__wrapped__, MAGIC_ATTR)
assert trainer_base.PPOTrainer.fit.freezes_heap
from verl.experimental.agent_loop import agent_loop
from verl.workers.rollout.vllm_rollout import vllm_async_server
assert agent_loop.AgentLoopWorker.__init__.freezes_heap and vllm_async_server.vLLMHttpServer.launch_server.freezes_heap
# both patches of the agent-loop worker's constructor apply: the in-process reward's inside the freeze
assert agent_loop.AgentLoopWorker.__init__.__wrapped__.__wrapped__
gc.unfreeze()
seen = []
build = verl_fixes._frozen(lambda: seen.append(("build", gc.get_freeze_count())), before=False)
train = verl_fixes._frozen(lambda: seen.append(("train", gc.get_freeze_count())), before=True)
build(); after_build = gc.get_freeze_count(); gc.unfreeze(); train()
assert seen[0] == ("build", 0) and after_build > 1000 and seen[1][1] > 1000, (seen, after_build)
print("frozen")
"""
    assert run_with_verl_fixes(script).split()[-1] == "frozen"
    check = "from verl.workers import engine_workers as w; print(hasattr(w.TrainingWorker.reset, 'freezes_heap'))"
    assert run_with_verl_fixes(check, LLM_BRIDGE_GC_UNFROZEN="1").split()[-1] == "False"


def test_ppo_trainer_polls_for_the_rollout_often():
    """verl 0.9.1's PPO trainer waits for the rollout by polling its ReplayBuffer every 2 s, so generation took a
    whole number of 2-s polls (4.02 s a step on CPU, 4.08 or 6.09 s on the H200). Through verl's plugin variable,
    as the trainer processes load it, llm_bridge.verl_fixes makes it poll every 0.1 s, without importing the
    replay buffer into processes that never use it."""
    script = """
import sys, verl
assert "verl.trainer.ppo.v1.replay_buffer" not in sys.modules, "imported eagerly"
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
import inspect
print(inspect.signature(ReplayBuffer.__init__.__wrapped__).parameters["poll_interval"].default,
      ReplayBuffer("sync", {}, None, "drop", {}).poll_interval)
"""
    verl_default, patched = run_with_verl_fixes(script).split()
    assert (float(verl_default), float(patched)) == (2.0, 0.1)


def test_one_rollout_server_is_routed_without_a_balancer_process():
    """verl 0.9.1 routes rollout requests through a Ray actor of its own (GlobalRequestLoadBalancer, 0.65 GiB on the
    CPU default). With one server, llm_bridge.verl_fixes runs verl's balancer class inside the client's process:
    it travels to the agent-loop workers as Ray would pickle it, counts requests in flight as verl's does, and
    refuses to add servers (which a per-process copy cannot share) instead of silently routing past them."""
    script = """
import asyncio, pickle, ray, verl
from verl.workers.rollout import router
ray.remote = None  # an actor would need this: the one-server balancer must not start one
handle = pickle.loads(pickle.dumps(router.get_router_handle(servers={"10.0.0.1:8000": "the-server"})))
async def route():
    server = await handle.acquire_server.remote(request_id="a")
    again = await handle.acquire_server.remote(request_id="a")
    fields = await handle.require_release_fields.remote()
    inflight = await handle.get_total_inflight.remote()
    handle.release_server.remote(server_id=server[0], request_id="a")  # verl does not await it
    return server, again, fields, inflight, await handle.get_total_inflight.remote()
print(asyncio.run(route()))
try:
    handle.add_servers.remote(servers={"10.0.0.2:8000": "another"})
except RuntimeError as error:
    print("refused:", error)
"""
    routed, refused = run_with_verl_fixes(script).strip().splitlines()[-2:]
    assert routed == ("(('10.0.0.1:8000', 'the-server'), ('10.0.0.1:8000', 'the-server'), [], 2, 1)")
    assert refused.startswith("refused:") and "cannot add or remove servers" in refused


def test_every_ppo_bench_row_is_accepted_by_verls_own_config(tmp_path):
    """Each row of bench/bench_ppo_gpu.py, as the benchmark launches it on an H100 (`--fit h100`), composes in verl's
    own config: a misspelt override fails here, not four minutes into a GPU session. A row's own setting of a key
    the fit also sets wins."""
    import json

    bench = bench_ppo_gpu()
    for name in bench.ROWS:
        params = json.loads(bench.row_params(name, 5, tmp_path / "gsm8k", 512, fit=bench.FITS["h100"]))
        overrides = ppo.verl_overrides(params["ppo"], tmp_path / "m", tmp_path / "d", tmp_path / "c", params["cluster"],
                                       params["max_prompt_length"], params["seed"])
        cfg = compose("ppo_trainer", overrides)
        actor = cfg.actor_rollout_ref.actor
        if name == "seed":  # the seed's padded micro batches of a fixed count: no fit
            assert not actor.use_dynamic_bsz and actor.ppo_micro_batch_size_per_gpu == 8
        else:
            assert actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu == (
                24576 if name.endswith("-24k") else 16384), name


def test_a_bench_row_run_again_reads_only_its_own_logs(tmp_path):
    """A PPO bench row run a second time on the same machine starts from an empty folder: the phase profiler's
    per-process logs of the first run are not read with the second's (on 2026-12-07 they were: the same call split
    came back for both runs). Here the second run stops at once (no model): its row has no timings of its own."""
    import argparse
    import time

    out = tmp_path / "bench"
    stale = out / "tuned" / "profile" / "worker-calls.1.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"method": "train_mini_batch", "s": 1.0}\n')
    args = argparse.Namespace(out=out, steps=2, seed_steps=2, gsm8k=tmp_path / "gsm8k", max_prompt_length=512, keep="",
                              profile=set(), fit="h100", model_dir=tmp_path / "no-model", data_dir=tmp_path / "no-data",
                              min_row_s=0)
    row = bench_ppo_gpu().run_row("tuned", args, time.monotonic() + 120)
    assert not stale.exists()
    assert row["exit"] == 2 and "error" in row and "worker_s" not in row
    assert row["ray_actors"] == []  # not an earlier Ray session's (Ray never started)
    # the stage refuses the missing input by name, in one line, before anything starts
    assert f"llm-bridge: error: the stage's inputs are missing: {tmp_path / 'no-model'}," in (out / "tuned.log").read_text()
