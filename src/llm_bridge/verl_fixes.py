"""Fixes to verl itself, on every device (CPU and GPU), loaded into every process of the SFT and PPO trainers
through verl's own plugin mechanism (VERL_USE_EXTERNAL_MODULES, set by `llm_bridge.sft` and `llm_bridge.ppo`
through `launch.child_env`). Each fix names the verl behaviour it corrects and the version it was checked
against; drop it when verl fixes it.
"""
from __future__ import annotations

import functools
import inspect
import os
import time
import types

from llm_bridge.import_hooks import when_imported

VERL_VERSION_CHECKED = "0.9.1"


def _resume_at_epoch_boundary() -> None:
    """verl's SFT trainer saves the StatefulDataLoader's state right after the last batch of an epoch, before the
    iterator has noticed it is finished. Loaded on resume, that state yields nothing more, so verl's epoch loop
    spends the whole next epoch on an empty iterator and the run ends one epoch short (a 5-epoch run of 250
    steps, killed after its checkpoint at step 50, stopped at step 200). A state at the end of its epoch holds
    no position worth keeping: skip it, and the loader starts the epoch verl resumes in (step // steps_per_epoch)
    from its first batch, with that epoch's shuffle, as an uninterrupted run would."""
    import torch
    from verl.utils.checkpoint import checkpoint_handler

    original = checkpoint_handler.CheckpointHandler._load_dataloader_state

    def load_dataloader_state(self, checkpoint_path: str):
        path = os.path.join(checkpoint_path, f"data_{self.dp_rank}.pt")
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("_num_yielded", 0) >= len(self.train_dataloader):
                print(f"[llm-bridge] {path}: the data loader had finished its epoch; the next epoch starts from its "
                      "first batch (verl 0.9.1 would skip it)", flush=True)
                return
        original(self, checkpoint_path)

    checkpoint_handler.CheckpointHandler._load_dataloader_state = load_dataloader_state


def _critic_attention_as_configured() -> None:
    """verl's critic loader (verl.utils.model.load_valuehead_model) hard-codes attn_implementation=
    "flash_attention_2", whatever `critic.model.override_config.attn_implementation` says. Without the flash_attn
    package (the lent H200 machine, any cluster that did not build it, every CPU) the load fails and verl reports a
    misleading "is not a value head model, please install trl". verl has already put the configured
    implementation into the model config (HFModelConfig: AutoConfig.from_pretrained(attn_implementation=...)):
    load with that one.

    The value head (a new layer: the checkpoint has no weights for it) is initialised from torch's global random
    state, which verl does not seed before building the critic: two runs with the same seed and identical rollouts
    got different values at step 1 and parted from there. It is drawn here from the run's seed (LLM_BRIDGE_SEED,
    set by llm_bridge.ppo), without touching the process's random state."""
    import verl.utils.model as model_utils

    original = model_utils.load_valuehead_model
    if hasattr(original, "__wrapped__"):
        return  # already patched in this process

    @functools.wraps(original)
    def load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code):
        import torch

        configured = getattr(model_config, "_attn_implementation", None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(os.environ.get("LLM_BRIDGE_SEED", "0")))
            if configured in (None, "flash_attention_2"):
                return original(local_path, torch_dtype, model_config, trust_remote_code)
            from transformers import AutoModelForTokenClassification

            return AutoModelForTokenClassification.from_pretrained(
                local_path, torch_dtype=torch_dtype, config=model_config, attn_implementation=configured,
                trust_remote_code=trust_remote_code)

    model_utils.load_valuehead_model = load_valuehead_model


REPLAY_POLL_S = 0.1
HOST_OFFSETS = "_llm_bridge_host_offsets"  # a nested tensor's offsets as a numpy array, kept by take_rows


def _replay_buffer_polls_often(replay_buffer) -> None:
    """verl 0.9.1's PPO trainer (the v1 TaskRunner) sends the rollout's prompts off and then polls its
    ReplayBuffer for the finished batch every 2 s (a constructor default no config key reaches), so generation
    always took a whole number of 2-s polls: 4.02 s a step on CPU, 4.08 or 6.09 s on the H200, where vLLM needs
    about 3.3. Poll every REPLAY_POLL_S instead: a poll is one metadata query to the TransferQueue controller, and
    the CPU steps got shorter with it (7.3 -> 5.2-5.8 s), not longer."""
    original = replay_buffer.ReplayBuffer.__init__

    @functools.wraps(original)
    def __init__(self, *args, poll_interval: float = REPLAY_POLL_S, **kwargs):
        original(self, *args, poll_interval=poll_interval, **kwargs)

    replay_buffer.ReplayBuffer.__init__ = __init__


def _responses_cut_out_at_once(padding) -> None:
    """verl 0.9.1's `no_padding_2_padding` cuts each response's log-probs or values out of the packed model output
    in a Python loop over the samples, with 0-d GPU tensors as slice bounds and pad size: three host-device
    synchronisations a sample, 772 of the 932 in one H200 actor update (and as many in the critic's), each keeping
    the host from queuing the loss and the backward while the GPU works (docs/benchmarks.md, "Lean rollout
    outputs"). The same cut as one gather: every response position indexes the packed rows (shifted left by one
    token, as verl's), padding positions an appended zero row. Same values and gradients; verl's two input
    checks become device-side asserts. Patched where verl defines it, before its users import the name.
    LLM_BRIDGE_VERL_PADDING_LOOP=1 keeps verl's loop (the benchmark's baseline row)."""
    if os.environ.get("LLM_BRIDGE_VERL_PADDING_LOOP") == "1":
        return
    import torch
    from verl.utils import tensordict_utils as tu

    def no_padding_2_padding(tensor, data):
        values = tensor.values() if tensor.is_nested else tensor
        prompt_ids, response_ids = data["prompts"], data["responses"]
        max_response_len = tu.get_non_tensor_data(data=data, key="max_response_len", default=-1)
        if prompt_ids.is_nested:
            prompt_lens, response_lens = prompt_ids.offsets().diff(), response_ids.offsets().diff()
            if max_response_len < 0:
                max_response_len = int(response_lens.max().item())
        else:
            attention_mask = data["attention_mask"]
            prompt_lens = attention_mask[:, : prompt_ids.shape[1]].sum(dim=1)
            response_lens = attention_mask[:, prompt_ids.shape[1]:].sum(dim=1)
            max_response_len = response_ids.shape[1]
        prompt_lens, response_lens = prompt_lens.to(values.device), response_lens.to(values.device)
        ends = (prompt_lens + response_lens).cumsum(dim=0)
        torch._assert_async(ends[-1] == values.shape[0], "no_padding_2_padding: the lengths do not add up to the rows")
        torch._assert_async(~prompt_lens.eq(0).any(), "no_padding_2_padding: an empty prompt")
        position = torch.arange(max_response_len, device=values.device)
        rows = (ends - response_lens - 1).unsqueeze(1) + position
        rows = torch.where(position < response_lens.unsqueeze(1), rows, values.shape[0])
        return torch.cat([values, values.new_zeros((1, *values.shape[1:]))])[rows]

    no_padding_2_padding.__wrapped__ = padding.no_padding_2_padding
    padding.no_padding_2_padding = no_padding_2_padding


# The only per-sample Python objects a training worker reads from its batch (verl 0.9.1: the FSDP engine's
# prepare_model_inputs); everything else rides along unread.
OBJECTS_WORKERS_READ = frozenset({"multi_modal_inputs"})


def without_sample_objects(data):
    """`data` (a TensorDict) without the per-sample Python objects (NonTensorStack: uid, data_source,
    reward_model, extra_info, raw prompts, ...) that no training worker reads; tensors, nested tensors and the
    batch's metadata (NonTensorData) stay, as do OBJECTS_WORKERS_READ. A shallow copy: nothing is copied."""
    from tensordict.tensorclass import NonTensorStack

    unread = [key for key in data.keys()  # noqa: SIM118 (iterating a TensorDict walks its batch, not its keys)
              if key not in OBJECTS_WORKERS_READ and isinstance(data._get_str(key, None), NonTensorStack)]
    return data.exclude(*unread) if unread else data


def _sample_objects_stay_behind(module, name: str) -> None:
    """verl 0.9.1's training workers receive the whole step batch, including its per-sample Python objects (17
    keys on a GSM8K PPO step: uid, data_source, reward_model, extra_info, raw_prompt, tools_kwargs, ...; 4,352
    tensordict objects for 256 samples), and carry them through every mini-batch split (tensordict_utils.
    make_iterator) and every micro batch's split and `.to(device)` (engine.utils.prepare_micro_batches). That is
    Python work with the GPU idle: on the H200 a 38-50 ms gap before each micro batch's forward, right after its
    tensors reach the GPU (phase_profile's GPU-idle timeline, 2026-12-06; on a 2-core Zen 4, `.to()` of a
    64-sample micro batch takes 17 ms with them and 0.7 ms without). The workers read none of them
    (OBJECTS_WORKERS_READ): they stay behind, and the tensors of every micro batch are the same.
    LLM_BRIDGE_KEEP_SAMPLE_OBJECTS=1 keeps verl's behaviour (the benchmark's baseline row)."""
    if os.environ.get("LLM_BRIDGE_KEEP_SAMPLE_OBJECTS") == "1":
        return
    original = getattr(module, name)
    if getattr(original, "leaves_sample_objects", False):
        return  # already patched in this process (a __wrapped__ would not tell: verl decorates functions too)

    @functools.wraps(original)
    def lean(data, *args, **kwargs):
        return original(without_sample_objects(data), *args, **kwargs)

    lean.leaves_sample_objects = True
    setattr(module, name, lean)


def _rows_selected_at_once(tensordict_utils) -> None:
    """verl 0.9.1 selects a mini batch's or a micro batch's rows of each nested (jagged) field by unbinding it into
    one tensor per sample, picking them in a Python list and concatenating them again (tensordict_utils.
    index_select_tensor_dict, behind both make_iterator and rearrange_micro_batches): 13 nested fields of 256
    samples cost 98 ms of Python a PPO update on a 2-core Zen 4, with the GPU idle (the 25-30 ms gaps at each
    split of the H100's actor update, 2026-12-06). Here a field's rows are one slice or one index_select of its
    packed values; the offsets are read to the host once a field and update and kept on the field and on the
    result, so later splits read them without waiting on the GPU; the result carries its min/max lengths. Same
    values and offsets as verl's (tests/test_presets.py). LLM_BRIDGE_VERL_SPLITS=1 keeps verl's behaviour (the
    benchmark's baseline)."""
    if os.environ.get("LLM_BRIDGE_VERL_SPLITS") == "1":
        return
    original = tensordict_utils.index_select_tensor_dict
    if getattr(original, "selects_at_once", False):
        return

    @functools.wraps(original)
    def index_select_tensor_dict(batch, indices):
        import numpy as np
        import torch

        if batch is None:
            return original(batch, indices)
        rows = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        nested = {key: value for key, value in batch.items()
                  if isinstance(value, torch.Tensor) and value.is_nested and _packed_rows(value)} if len(rows) else {}
        selected = original(batch.exclude(*nested) if nested else batch, indices)
        for key, value in nested.items():
            selected[key] = take_rows(value, rows)
        return selected

    index_select_tensor_dict.selects_at_once = True
    tensordict_utils.index_select_tensor_dict = index_select_tensor_dict


def _decoder_layers_compiled(transformer_impl) -> None:
    """With LLM_BRIDGE_COMPILE=1, verl's FSDP engine (actor, critic, reference; SFT) compiles each decoder layer after
    wrapping the model (llm_bridge.gpu_support.compile_decoder_layers; verl 0.9.1's own `use_torch_compile` compiles
    only the entropy function)."""
    if os.environ.get("LLM_BRIDGE_COMPILE") != "1":  # gpu_support.COMPILE, read before importing that module
        return
    from llm_bridge.gpu_support import COMPILE, compile_decoder_layers

    engine = transformer_impl.FSDPEngine
    original = engine._build_fsdp_module
    if getattr(original, "compiles_layers", False):
        return

    @functools.wraps(original)
    def build_fsdp_module(self, module):
        wrapped = original(self, module)
        count = compile_decoder_layers(wrapped)
        print(f"[llm-bridge] {count} decoder layers under torch.compile ({COMPILE}=1)", flush=True)
        return wrapped

    build_fsdp_module.compiles_layers = True
    engine._build_fsdp_module = build_fsdp_module


def _packed_rows(tensor) -> bool:
    """A jagged nested tensor ragged in its first sample dimension with no holes: its rows are slices of values."""
    import torch

    return tensor.layout == torch.jagged and getattr(tensor, "_ragged_idx", 1) == 1 and tensor._lengths is None


def host_offsets(tensor):
    """A nested tensor's offsets as a numpy array, read once and kept on the tensor (HOST_OFFSETS): on a GPU the
    one wait a field and update (verl's unbind waits at every split)."""
    host = getattr(tensor, HOST_OFFSETS, None)
    if host is None:
        host = tensor.offsets().cpu().numpy()
        setattr(tensor, HOST_OFFSETS, host)
    return host


def take_rows(tensor, rows):
    """Rows `rows` (a numpy int64 array) of a packed jagged nested tensor, as a new one (values copied, as verl's
    selection copies)."""
    import numpy as np
    import torch

    host = host_offsets(tensor)
    starts = host[rows]
    lengths = host[rows + 1] - starts
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = tensor.values()
    if (np.diff(rows) == 1).all():  # mini batches: consecutive rows, one slice
        picked = values[starts[0]:starts[0] + offsets[-1]].clone()
    else:
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        picked = values.index_select(0, torch.from_numpy(index).to(values.device))
    result = torch.nested.nested_tensor_from_jagged(
        picked, offsets=torch.from_numpy(offsets).to(values.device),
        min_seqlen=int(lengths.min()), max_seqlen=int(lengths.max()))
    setattr(result, HOST_OFFSETS, offsets)
    return result


def fields_workers_read(batch) -> list[str]:
    """The TransferQueue fields of `batch` (a KVBatchMeta) that a training worker reads: all but the per-sample
    objects (TransferQueue's field schema says which are not tensors), except OBJECTS_WORKERS_READ."""
    import transfer_queue as tq

    meta = tq.get_client().kv_retrieve_meta(keys=batch.keys, partition_id=batch.partition_id)
    return [field for field in batch.fields or meta.field_names
            if field in OBJECTS_WORKERS_READ or not meta.field_schema.get(field, {}).get("is_non_tensor", False)]


def _workers_fetch_no_sample_objects(trainer_base) -> None:
    """Before the splits (_sample_objects_stay_behind), the objects travel: verl 0.9.1's trainer hands each
    training-worker call the batch's TransferQueue keys with no field list, so the worker fetches every field,
    the per-sample objects pickled through ZeroMQ from the storage units with the tensors. The trainer's calls
    that reach training workers (old and reference log-probs, values, the critic's and the actor's updates) now
    name the fields those read. On a 2-core Zen 4 a worker's fetch of a 256-sample GSM8K PPO step took 118-143 ms
    with the objects and 42-63 ms without (docs/benchmarks.md), and the H200 preset's step fetches three times.
    LLM_BRIDGE_KEEP_SAMPLE_OBJECTS=1 keeps verl's behaviour, as for the splits."""
    if os.environ.get("LLM_BRIDGE_KEEP_SAMPLE_OBJECTS") == "1":
        return
    for name in ("_compute_old_log_prob", "_compute_ref_log_prob", "_compute_values", "_update_critic", "_update_actor"):
        method = getattr(trainer_base.PPOTrainer, name)
        if not getattr(method, "names_worker_fields", False):
            setattr(trainer_base.PPOTrainer, name, _naming_worker_fields(method))


def _naming_worker_fields(method):
    """A trainer method that calls training workers with `batch`, its batch naming only the fields they read for
    the call; the trainer's own batch goes on as it was."""
    @functools.wraps(method)
    def wrapper(self, batch, *args, **kwargs):
        everything = batch.fields
        batch.fields = fields_workers_read(batch)
        try:
            return method(self, batch, *args, **kwargs)
        finally:
            batch.fields = everything

    wrapper.names_worker_fields = True
    return wrapper


def _freeze_heap() -> None:
    """Everything alive now out of the garbage collector's reach (gc.freeze): what a process built before
    training (modules, configs, imported code) is never garbage, yet every full collection scans it."""
    import gc

    gc.collect()
    gc.freeze()


def _frozen(method, before: bool):
    """method (or coroutine method), with the heap frozen after it (one that builds) or before it (one that
    trains)."""
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def wrapper(*args, **kwargs):
            if before:
                _freeze_heap()
            result = await method(*args, **kwargs)
            if not before:
                _freeze_heap()
            return result
    else:
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            if before:
                _freeze_heap()
            result = method(*args, **kwargs)
            if not before:
                _freeze_heap()
            return result
    wrapper.freezes_heap = True  # verl's methods carry a __wrapped__ of their own: this marks ours
    return wrapper


def _gc_heap_frozen(module, names: tuple[str, ...], before: bool = False) -> None:
    """verl 0.9.1's processes hold 600,000-790,000 objects the garbage collector tracks once they are built (the
    CPU default's training worker, trainer and vLLM server), and each full collection scans them all: 0.3-0.56 s
    a collection on a 2-core Zen 4. One that falls in a step stops it: on the H200 the critic's update paused 1.3
    s inside a micro batch with no operator running, and the updates' times spread by up to 0.8 s from step to
    step (docs/benchmarks.md, "Where the GPU waits"). vLLM freezes its engine core's heap after start-up for the
    same reason; here the training workers' after they build their models (TrainingWorker.reset,
    ActorRolloutRefWorker.init_model), the rollout's HTTP server and agent-loop workers' after they start, and
    the trainer's when training starts (before fit: `before`). Objects made later are collected as before: on the
    CPU default a full collection in the training worker took 15-23 ms instead of 300-450 ms.
    LLM_BRIDGE_GC_UNFROZEN=1 keeps verl's behaviour (the benchmark's baseline row)."""
    if os.environ.get("LLM_BRIDGE_GC_UNFROZEN") == "1":
        return
    for qualified in names:
        cls_name, method_name = qualified.split(".")
        cls = getattr(module, cls_name)
        method = vars(cls)[method_name]
        if not getattr(method, "freezes_heap", False):
            setattr(cls, method_name, _frozen(method, before))


def _say_when_agent_loops_are_up(agent_loop_tq) -> None:
    """Not a fix: a line for PPO's start-up split on the terminal (llm_bridge.console.PPO_STARTUP). verl creates
    its agent-loop workers (8 processes that import vLLM and verl; 1 on the CPU preset) after its last start-up
    line, "ready to fit", and the first batch handed to them waits until they are up: 42-46 s of the H200's first
    step (its `prepare`, docs/benchmarks.md) that no line told apart from the step. This prints, in verl's own
    log format, when the first batch has been taken."""
    from llm_bridge.console import AGENT_LOOPS_UP

    manager = agent_loop_tq.AgentLoopManagerTQ
    method = manager.generate_sequences
    if getattr(method, "says_when_up", False):
        return

    @functools.wraps(method)
    def generate_sequences(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        if not getattr(self, "_llm_bridge_said_up", False):
            self._llm_bridge_said_up = True
            now = time.time()
            print(f"INFO:{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{int(now % 1 * 1000):03d}:"
                  f"{AGENT_LOOPS_UP} (llm-bridge)", flush=True)
        return result

    generate_sequences.says_when_up = True
    manager.generate_sequences = generate_sequences


class _Done:
    """An awaitable that is already finished: `await _Done(x)` is x."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        return self.value
        yield  # a generator: what `await` drives


class _LocalHandle:
    """Stands in for a Ray actor handle inside one process: `handle.method.remote(...)` calls the method here, at
    once, and returns an awaitable of its result, as `await handle.method.remote(...)` expects (and a call nobody
    awaits has still happened). The object is built by `make` on the first call, inside the caller's running event
    loop (verl's reward managers run the tokenizer in `self.loop`'s executor, which must be the loop that awaits
    them). Methods in `refused` raise `refused[name]`: what a copy in one process cannot do for the others."""

    def __init__(self, make, refused: dict[str, str] | None = None):
        self._make, self._refused, self._object = make, refused or {}, None

    def __getattr__(self, name: str):
        if name.startswith("__"):  # pickle's probes (__setstate__, ...) before __init__'s attributes exist
            raise AttributeError(name)

        def remote(*args, **kwargs):
            if name in self._refused:
                raise RuntimeError(self._refused[name])
            if self._object is None:
                self._object = self._make()
            result = getattr(self._object, name)(*args, **kwargs)
            return result if inspect.isawaitable(result) else _Done(result)

        return types.SimpleNamespace(remote=remote)


def _reward_in_the_agent_loop(agent_loop) -> None:
    """verl 0.9.1 scores each rollout in a separate Ray actor (RewardLoopWorker), one process of about 0.56 GiB
    for a rule reward that takes microseconds; with `reward.num_workers=0` it has no worker and the agent loop
    fails (random.choice of an empty list). Score in the agent loop's own process then: the CPU default's way to
    one process less (issue 13's memory budget). A reward model keeps verl's workers (handles are None there)."""
    original = agent_loop.AgentLoopWorker.__init__

    @functools.wraps(original)
    def __init__(self, config, *args, **kwargs):
        original(self, config, *args, **kwargs)
        if self.reward_loop_worker_handles == []:
            from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

            self.reward_loop_worker_handles = [_LocalHandle(functools.partial(RewardLoopWorker, config))]

    agent_loop.AgentLoopWorker.__init__ = __init__


def _one_server_needs_no_balancer(router) -> None:
    """verl 0.9.1 routes every rollout request through a Ray actor of its own (GlobalRequestLoadBalancer: sticky
    sessions and least-in-flight choice among the rollout servers), one more Python process of about 0.65 GiB PSS
    on the CPU default (issue 13's memory budget). With one rollout server (one GPU, or the CPU default) there is
    nothing to choose: the same balancer class then runs inside each process that holds verl's server client (the
    agent-loop workers). verl's async trainers add and remove servers on the shared balancer; a copy a process
    cannot do that, so those calls fail loudly. Several servers, or a custom router, keep verl's actor."""
    original = router._create_global_sticky_inflight

    @functools.wraps(original)
    def create(servers, full_determinism=False, load_balancer_cls=None):
        if len(servers) != 1 or load_balancer_cls is not router.GlobalRequestLoadBalancer:
            return original(servers=servers, full_determinism=full_determinism, load_balancer_cls=load_balancer_cls)
        why = ("llm_bridge.verl_fixes runs verl's load balancer inside each process for a single rollout server; "
               "it cannot add or remove servers (an async trainer's)")
        return _LocalHandle(functools.partial(router.GlobalRequestLoadBalancer, servers=dict(servers),
                                              max_cache_size=router.DEFAULT_ROUTING_CACHE_SIZE,
                                              full_determinism=full_determinism),
                            refused={name: why for name in ("add_servers", "remove_servers", "batch_add_servers",
                                                            "batch_remove_servers")})

    router._create_global_sticky_inflight = create


_resume_at_epoch_boundary()
_critic_attention_as_configured()
when_imported("verl.trainer.ppo.v1.replay_buffer", _replay_buffer_polls_often)
when_imported("verl.workers.utils.padding", _responses_cut_out_at_once)
when_imported("verl.experimental.agent_loop.agent_loop", _reward_in_the_agent_loop)
when_imported("verl.workers.rollout.router", _one_server_needs_no_balancer)
# the mini-batch split (called as tu.make_iterator) and the micro-batch split (a name imported into the engine)
when_imported("verl.utils.tensordict_utils", lambda tu: _sample_objects_stay_behind(tu, "make_iterator"))
when_imported("verl.utils.tensordict_utils", _rows_selected_at_once)
when_imported("verl.workers.engine.fsdp.transformer_impl",
              lambda engine: _sample_objects_stay_behind(engine, "prepare_micro_batches"))
when_imported("verl.workers.engine.fsdp.transformer_impl", _decoder_layers_compiled)
when_imported("verl.trainer.ppo.v1.trainer_base", _workers_fetch_no_sample_objects)
when_imported("verl.workers.engine_workers", lambda workers: _gc_heap_frozen(
    workers, ("TrainingWorker.reset", "ActorRolloutRefWorker.init_model")))
when_imported("verl.trainer.ppo.v1.trainer_base", lambda trainer: _gc_heap_frozen(trainer, ("PPOTrainer.fit",), before=True))
when_imported("verl.workers.rollout.vllm_rollout.vllm_async_server",
              lambda server: _gc_heap_frozen(server, ("vLLMHttpServer.launch_server",)))
when_imported("verl.experimental.agent_loop.agent_loop",
              lambda loop: _gc_heap_frozen(loop, ("AgentLoopWorker.__init__",)))
when_imported("verl.trainer.ppo.v1.agent_loop_tq", _say_when_agent_loops_are_up)
