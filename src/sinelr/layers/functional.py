"""The sine weight and a row-blocked linear map that never keeps a whole weight alive.

``sin(ω·UV)/g`` is a dense ``d_out × d_in`` matrix even though it has only ``k(d_in+d_out)``
parameters. Plain autograd keeps both ``ω·UV`` (for the sine's backward) and the sine itself (for
the matmul's backward) until the backward pass: two weight-sized tensors per layer, the paper's
1.31× memory of sine LoRA over LoRA. :func:`blockwise_linear` computes ``x @ W.T`` a block of
weight rows at a time and rebuilds each block in the backward pass from the factors, so the
extra memory is one block however large the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# Rows per block are chosen so that one block holds about this many weight entries (4 MiB in
# fp32). The backward pass keeps about five block-sized temporaries at a time (the block, its
# argument, its gradient, the cosine and the argument's gradient): 20 MiB, under a third of one
# 4096×4096 fp32 matrix, while blocks stay large enough for the matmuls to run at full speed.
DEFAULT_BLOCK_ELEMS = 1 << 20

WeightFn = Callable[..., Tensor]
"""``weight_fn(rows, *params) -> W[rows]``: builds a slice of weight rows from the parameters."""


def sine_weight(U: Tensor, V: Tensor, omega: float, gain: float) -> Tensor:
    """``sin(ω·U V) / g``, the sine-activated low-rank matrix (METHOD.md, "Layers")."""
    return torch.sin(omega * (U @ V)) / gain


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the surrounding autocast region would run a matmul in."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _row_blocks(n_rows: int, block_rows: int) -> list[slice]:
    return [slice(i, min(i + block_rows, n_rows)) for i in range(0, n_rows, block_rows)]


class _BlockwiseLinear(torch.autograd.Function):
    """``y = x @ W.T`` with ``W`` built row block by row block from ``params``.

    Only ``x`` and the parameters are saved; each block of ``W`` is rebuilt in backward under a
    local autograd graph, so gradients are exact for any ``weight_fn`` (sine, DoRA's row norm).
    Blocks are built in the parameters' precision (fp32) with autocast off, whatever the
    caller's precision: the sine's argument ``ω·UV`` is large and its phase must not be rounded
    to 8 bits. Only the finished block is cast to the autocast dtype for the matmul, and the
    input gradient is accumulated over blocks in at least fp32.
    """

    @staticmethod
    def forward(ctx, x, weight_fn, n_rows, block_rows, *params):  # type: ignore[override]
        compute_dtype = _compute_dtype(x)
        device_type = x.device.type
        x2d = x.reshape(-1, x.shape[-1]).to(compute_dtype)
        out = x2d.new_empty(x2d.shape[0], n_rows)
        with torch.no_grad(), torch.autocast(device_type, enabled=False):
            for rows in _row_blocks(n_rows, block_rows):
                out[:, rows] = x2d @ weight_fn(rows, *params).to(compute_dtype).T
        ctx.weight_fn = weight_fn
        ctx.block_rows = block_rows
        ctx.n_rows = n_rows
        ctx.compute_dtype = compute_dtype
        ctx.x_shape = x.shape
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x, *params)
        return out.reshape(*x.shape[:-1], n_rows)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, *params = ctx.saved_tensors
        dtype = ctx.compute_dtype
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        g2d = grad_out.reshape(-1, ctx.n_rows).to(dtype)
        need_x = ctx.needs_input_grad[0]
        leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        grads = [torch.zeros_like(leaf) for leaf in wanted]
        acc_dtype = torch.promote_types(dtype, torch.float32)
        grad_x = torch.zeros_like(x2d, dtype=acc_dtype) if need_x else None
        with torch.autocast(x.device.type, enabled=False):
            for rows in _row_blocks(ctx.n_rows, ctx.block_rows):
                with torch.enable_grad():
                    w = ctx.weight_fn(rows, *leaves)
                g_rows = g2d[:, rows]
                if need_x:
                    w_c = w.detach().to(dtype)
                    if acc_dtype == dtype:
                        grad_x.addmm_(g_rows, w_c)
                    else:
                        grad_x += (g_rows @ w_c).to(acc_dtype)
                if wanted:
                    grad_w = (g_rows.T @ x2d).to(w.dtype)
                    for acc, g in zip(grads, torch.autograd.grad(w, wanted, grad_w), strict=True):
                        acc += g
                del w
        param_grads = iter(grads)
        out_param_grads = [next(param_grads) if leaf.requires_grad else None for leaf in leaves]
        if grad_x is not None:
            grad_x = grad_x.reshape(ctx.x_shape).to(ctx.x_dtype)
        return (grad_x, None, None, None, *out_param_grads)


def blockwise_linear(
    x: Tensor,
    weight_fn: WeightFn,
    params: Sequence[Tensor],
    n_rows: int,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> Tensor:
    """``x @ W.T`` where ``W[rows] = weight_fn(rows, *params)``, holding one block at a time.

    ``params`` must be every tensor ``weight_fn`` reads that may need a gradient (frozen tensors
    may be passed too and get none).
    """
    block_rows = max(1, block_elems // max(1, x.shape[-1]))
    return _BlockwiseLinear.apply(x, weight_fn, n_rows, block_rows, *params)
