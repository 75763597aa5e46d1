"""Fast verl SFT and PPO training on GPUs without flash-attn (the lent H200 machine; any cluster where flash-attn
is missing).

verl imports this module in every process when it is named in VERL_USE_EXTERNAL_MODULES (the h200 presets'
`env`). Two things are slow in verl 0.9.1 when the flash-attn package is absent, two more on any GPU; each has a
fix here (measured on 1 x H200, docs/benchmarks.md):

1. Log-probs: the main cause. Without flash-attn's Triton cross-entropy, verl.utils.torch_functional.
   logprobs_from_logits falls back to `logprobs_from_logits_v2`, a Python loop over rows: one log_softmax +
   gather per token, forward and backward (0.65 s for 4096 tokens, against 7.5 ms vectorised). With
   LLM_BRIDGE_FAST_LOGPROBS=1 that fallback becomes one vectorised cross-entropy, with =triton (the h200
   presets') two Triton kernels without its fp32 copies of the logits (llm_bridge.logprobs). (verl's own
   `model.use_fused_kernels=True` also avoids the loop, but measured 20 % slower per step.)
2. Packed attention. verl's padding-free path (model.use_remove_padding) packs a micro batch into one row and
   expects flash-attn's varlen kernel. With SDPA, transformers turns the packed row into a dense T x T
   block-diagonal mask: attention over the whole micro batch, O(T^2), in the masked kernel (30 ms against 2 ms
   for a 16k-token row). PyTorch ships the varlen flash kernel itself (torch.nn.attention.varlen.varlen_attn);
   this registers it with transformers as attn_implementation "varlen"
   (`+model.override_config.attn_implementation=varlen`).
3. Launch-bound layers (opt-in): with LLM_BRIDGE_COMPILE=1 (a preset's `env`), verl's FSDP engine compiles each
   decoder layer and these log-probs with torch.compile (compile_decoder_layers, hooked in by
   llm_bridge.verl_fixes). On the actor's micro step alone it is 4 % slower than Liger's kernels and needs 20 %
   less memory (bench/bench_layers.py, H200, 2026-12-06): not in the presets.
4. Liger's kernels recompiled mid-update: Triton compiles a kernel again for a micro batch whose row count
   divides by 16 when the last did not; Liger's row-count arguments are left unspecialised
   (compiled_once_for_all_counts).
"""
from __future__ import annotations

import functools
import os

import torch

from llm_bridge.import_hooks import when_imported
from llm_bridge.logprobs import logprobs_function

ATTN_NAME = "varlen"
_state = {"repeat_kv": False}
COMPILE = "LLM_BRIDGE_COMPILE"  # "1": decoder layers and log-probs under torch.compile (off by default)
VARLEN_DEVICES = {"cuda"}  # where torch has the varlen kernel; elsewhere attention goes to SDPA


def _boundaries(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """cu_seqlens and max length of the packed row (positions restart at 0 for each sequence). Cached on the
    tensor object: every layer (and a checkpointed recompute) gets the same position_ids, so one sync a forward."""
    cached = getattr(position_ids, "_llm_bridge_cu", None)
    if cached is not None:
        return cached
    pos = position_ids.reshape(-1)
    starts = torch.nonzero(pos == 0).flatten()
    cu = torch.cat([starts, starts.new_tensor([pos.numel()])]).to(torch.int32)
    result = (cu, int((cu[1:] - cu[:-1]).max()))
    position_ids._llm_bridge_cu = result
    return result


def boundaries_as_kwargs(module, args, kwargs):
    """Forward pre-hook (with_kwargs) for the model under the head (the one holding the decoder layers): a packed
    row's boundaries computed once before the layers and handed to each attention call as transformers'
    flash-attention kwargs (cu_seq_lens_q/k, max_length_q/k), which it passes down. Computed inside a compiled
    layer they would split it into five graphs (a data-dependent nonzero, a host int): torch.compile needs this."""
    position_ids = kwargs.get("position_ids")
    if position_ids is None or kwargs.get("attention_mask") is not None or position_ids.dim() != 2 \
            or position_ids.shape[0] != 1 or "cu_seq_lens_q" in kwargs:
        return None
    cu, max_len = _boundaries(position_ids)
    return args, {**kwargs, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len}


def varlen_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers attention interface: (B, H, T, D) in, (B, T, H, D) out. Packed single rows go to the varlen
    flash kernel; anything else (padded batches, generation with a cache, CPU) goes to SDPA unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or position_ids is None or query.shape[0] != 1 \
            or query.device.type not in VARLEN_DEVICES or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    from torch.nn.attention.varlen import varlen_attn

    cu, max_len = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None:
        cu, max_len = _boundaries(position_ids)
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # (T, H, D)
    if _state["repeat_kv"] and k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    try:
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, window_size=(-1, 0))
    except RuntimeError:
        if _state["repeat_kv"] or k.shape[1] == q.shape[1]:
            raise
        _state["repeat_kv"] = True  # a kernel build without grouped-query support: expand K/V once and for all
        print("[gpu_support] varlen_attn refused grouped K/V heads; repeating them", flush=True)
        return varlen_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    return out.unsqueeze(0), None


def compile_decoder_layers(model) -> int:
    """Each transformer block of `model` (a class named *DecoderLayer, inside FSDP's wrappers or not) under
    torch.compile, the "regional compilation" torch recommends: one compiled graph shared by all the layers, FSDP's
    hooks left outside it. The layer's small kernels (norms, rotary embedding, SwiGLU, residual adds) become a few
    fused ones, launched from one graph: the update's GPU sat idle 28 % of its time while the host launched them
    one by one (the H100's actor update, 2026-12-06). Returns the number of layers compiled."""
    # one compiled code object serves every layer; token counts change each micro batch (dynamic after the first)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        layer.compile()
    for stack in model.modules():  # varlen attention: packed rows' boundaries computed before the compiled layers
        if isinstance(getattr(stack, "layers", None), torch.nn.ModuleList) \
                and getattr(getattr(stack, "config", None), "_attn_implementation", None) == ATTN_NAME:
            stack.register_forward_pre_hook(boundaries_as_kwargs, with_kwargs=True)
    return len(layers)


# Liger's Triton kernels that take a packed micro batch's row or token count (module: kernel: arguments, Liger 0.8.5).
# Triton compiles an int argument apart for values that divide by 16 and values that do not, so the first micro
# batch whose count changes class compiles the kernel again in the middle of an update: 0.80 s in the RMSNorm
# backward of the H200's actor update, 0.10 s in the rotary embedding's of its critic update (2026-12-06). The
# counts only bound loops and pick rows, where the hint buys nothing.
LIGER_ROW_COUNTS = {
    "liger_kernel.ops.rms_norm": {"_rms_norm_backward_kernel": ("n_rows", "rows_per_program"),
                                  "_block_rms_norm_forward_kernel": ("n_rows",),
                                  "_block_rms_norm_backward_kernel": ("n_rows",)},
    "liger_kernel.ops.rope": {"_triton_rope": ("sl",)},
}


def compiled_once_for_all_counts(module, kernels: dict[str, tuple[str, ...]]) -> None:
    """The named int arguments of each Triton kernel in `module` no longer specialised: one compiled kernel for
    every count (before the kernel first runs: Triton reads this when it builds the kernel's argument binder)."""
    for kernel_name, names in kernels.items():
        kernel = getattr(module, kernel_name, None)
        for param in getattr(kernel, "params", []):  # a renamed kernel (another Liger): left as it is
            if param.name in names:
                param.do_not_specialize = True


def install() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    for module, kernels in LIGER_ROW_COUNTS.items():
        when_imported(module, functools.partial(compiled_once_for_all_counts, kernels=kernels))
    AttentionInterface.register(ATTN_NAME, varlen_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, flash_attention_mask)  # no dense mask: None unless padded
    fast_logprobs = os.environ.get("LLM_BRIDGE_FAST_LOGPROBS", "0")
    if fast_logprobs not in ("0", "1", "triton"):  # not silently verl's loop, 100x slower
        raise ValueError(f"LLM_BRIDGE_FAST_LOGPROBS={fast_logprobs!r}: use 0 (verl's own), 1 (vectorised) or triton")
    if fast_logprobs != "0":
        import verl.utils.torch_functional as tf

        tf.logprobs_from_logits_v2 = logprobs_function(
            "triton" if fast_logprobs == "triton" else "compiled" if os.environ.get(COMPILE) == "1" else "eager")


install()
