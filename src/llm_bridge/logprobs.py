"""log p(label) over the vocabulary for verl's actor and reference, in the forms the GPU presets choose between
(LLM_BRIDGE_FAST_LOGPROBS, installed by llm_bridge.gpu_support in place of verl's per-row fallback loop):

  eager     one vectorised cross-entropy on the logits upcast to fp32 ("1")
  compiled  the same under torch.compile (with LLM_BRIDGE_COMPILE=1): the upcast, log-softmax and gather fused
  triton    two Triton kernels reading the logits in their own dtype, no fp32 copies (llm_bridge.logprob_kernel;
            the h200 presets' choice: 8x eager alone and 20 GiB less for a 16k-token micro batch on an H100)
"""
from __future__ import annotations

import torch

KINDS = ("eager", "compiled", "triton")


def logprobs_vectorised(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) for every row at once (fp32 softmax inside cross_entropy), instead of verl's per-row loop."""
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             reduction="none")
    return -flat.view(labels.shape)


def logprobs_function(kind: str):
    """The log-prob function of that kind. Compiled: 117 ms of kernels and two fp32 copies of the logits fewer in
    eager's place (the H100's actor update of 2026-12-06); Triton: imported only here, where it is asked for (a
    CPU-only torch has no Triton)."""
    if kind == "compiled":
        return torch.compile(logprobs_vectorised, dynamic=True)
    if kind == "triton":
        from llm_bridge.logprob_kernel import logprobs

        return logprobs
    if kind == "eager":
        return logprobs_vectorised
    raise ValueError(f"log-prob kind {kind!r}: one of {', '.join(KINDS)}")
