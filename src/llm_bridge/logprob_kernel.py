"""log p(label) over the vocabulary in two Triton kernels that read the logits in their own dtype.

The vectorised log-probs (llm_bridge.logprobs.logprobs_vectorised) upcast the bf16 logits to fp32 and run
torch's log-softmax, so a 16k-token micro batch of a 128k vocabulary writes and reads several 8-GB fp32 copies,
forward and backward: 115 ms of log-softmax kernels, plus the casts, in the H100's actor update of 1.44 s of GPU
time (2026-12-07). Here the forward reads each row once (an online log-sum-exp in fp32 registers) and keeps only the
row's log-sum-exp; the backward reads the row again and writes its gradient, 1[label] - softmax, in the logits'
dtype. The same arithmetic as the fp32 route (bf16 values are exact in fp32), without the copies; flash-attn's
Triton cross-entropy, which verl uses where flash-attn is installed, does the same. On: LLM_BRIDGE_FAST_LOGPROBS=triton.
Runs wherever Triton does (TRITON_INTERPRET=1: on CPU tensors, how the tests check it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096  # columns a loop iteration: a 128k vocabulary in 32 steps, each load 8 KB of bf16 a row
NUM_WARPS = 8


@triton.jit
def _forward(logits_ptr, labels_ptr, logprobs_ptr, lse_ptr, row_stride, vocab, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    running_max = tl.full([], -float("inf"), tl.float32)
    running_sum = tl.zeros([], tl.float32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < vocab, other=-float("inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, 0))  # finite: every block holds at least one column
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    label = tl.load(labels_ptr + row)
    valid = (label >= 0) & (label < vocab)  # an ignored label (-100) gives 0, as cross_entropy's ignore_index
    picked = tl.load(row_ptr + label, mask=valid, other=0.0).to(tl.float32)
    tl.store(logprobs_ptr + row, tl.where(valid, picked - lse, 0.0))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _backward(logits_ptr, labels_ptr, lse_ptr, grad_ptr, grad_logits_ptr, row_stride, grad_row_stride, vocab,
              BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * row_stride
    out_ptr = grad_logits_ptr + row * grad_row_stride
    label = tl.load(labels_ptr + row)
    valid = (label >= 0) & (label < vocab)
    grad = tl.where(valid, tl.load(grad_ptr + row), 0.0)
    lse = tl.load(lse_ptr + row)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        d = grad * (tl.where(cols == label, 1.0, 0.0) - tl.exp(x - lse))
        tl.store(out_ptr + cols, d.to(grad_logits_ptr.dtype.element_ty), mask=mask)


class _LogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows2d = logits.reshape(-1, logits.shape[-1])
        if rows2d.stride(-1) != 1:
            rows2d = rows2d.contiguous()
        flat_labels = labels.reshape(-1).contiguous()
        logprobs = torch.empty(rows2d.shape[0], dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logprobs)
        if rows2d.shape[0]:
            _forward[(rows2d.shape[0],)](rows2d, flat_labels, logprobs, lse, rows2d.stride(0), rows2d.shape[1],
                                        BLOCK=BLOCK, num_warps=NUM_WARPS)
        ctx.save_for_backward(rows2d, flat_labels, lse)
        ctx.logits_shape = logits.shape
        return logprobs.view(labels.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows2d, flat_labels, lse = ctx.saved_tensors
        grad_rows = torch.empty(rows2d.shape, dtype=rows2d.dtype, device=rows2d.device)
        if rows2d.shape[0]:
            _backward[(rows2d.shape[0],)](rows2d, flat_labels, lse, grad.reshape(-1).float().contiguous(), grad_rows,
                                         rows2d.stride(0), grad_rows.stride(0), rows2d.shape[1],
                                         BLOCK=BLOCK, num_warps=NUM_WARPS)
        return grad_rows.view(ctx.logits_shape), None


def logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) for every row of `logits` (..., vocab), fp32, shaped as `labels`; differentiable in `logits`."""
    return _LogProbs.apply(logits, labels)
