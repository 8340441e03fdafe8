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
from torch.autograd.function import once_differentiable

# Rows per block are chosen so that one block holds about this many weight entries (4 MiB in
# fp32). The backward pass keeps three block-sized temporaries (the block, the sine's argument
# turned cosine, the block's gradient), 12 MiB: under a fifth of one 4096×4096 fp32 matrix,
# while blocks stay large enough for the matmuls to run at full speed.
DEFAULT_BLOCK_ELEMS = 1 << 20

WeightFn = Callable[..., Tensor]
"""``weight_fn(rows, *params) -> W[rows]``: a slice of weight rows from the parameters."""
VJP = Callable[[Tensor], Sequence[Tensor | None]]
WeightVJPFn = Callable[..., tuple[Tensor, VJP]]
"""``weight_vjp(rows, *params) -> (W[rows], vjp)``; ``vjp(dL/dW[rows])`` gives each parameter's
full-size gradient (None for one without); it may overwrite its argument."""


def _sine_of_product_(product: Tensor, omega: float, scale: float, base: Tensor | None) -> Tensor:
    """``base + scale·sin(ω·P)``, turning ``product`` into ``ω·P`` in place.

    In place where autograd keeps nothing (a matmul does not save its output, a sine not its
    output), so this stays differentiable, and the caller may reuse ``ω·P`` for the cosine.
    """
    sine = torch.sin(product.mul_(omega))
    return sine.mul_(scale) if base is None else torch.add(base, sine, alpha=scale)


def sine_weight(
    U: Tensor, V: Tensor, omega: float, scale: float, base: Tensor | None = None
) -> Tensor:
    """``base + scale·sin(ω·U V)``; ``scale = 1/g`` is docs/method.md's sine low-rank matrix."""
    return _sine_of_product_(U @ V, omega, scale, base)


def sine_rows_vjp(
    rows: slice, U: Tensor, V: Tensor, omega: float, scale: float, base: Tensor | None = None
) -> tuple[Tensor, Callable[[Tensor], tuple[Tensor, Tensor]]]:
    """Rows ``rows`` of :func:`sine_weight` (``base`` given as those rows) and their backward.

    ``dL/d(UV) = dL/dW ⊙ scale·ω·cos(ω·UV)``: the argument's buffer is reused for the cosine and
    the incoming gradient's for the product's, so a block costs three block-sized tensors. The
    backward returns full-size gradients of ``U`` (zero outside ``rows``) and ``V``.
    """
    U_rows = U[rows]
    argument = U_rows @ V
    weight = _sine_of_product_(argument, omega, scale, base)  # argument is now ω·U[rows]V

    def vjp(grad_weight: Tensor) -> tuple[Tensor, Tensor]:
        grad_product = grad_weight.mul_(argument.cos_()).mul_(scale * omega)
        grad_U = torch.zeros_like(U)
        grad_U[rows] = grad_product @ V.T
        return grad_U, U_rows.T @ grad_product

    return weight, vjp


def autograd_vjp(weight_fn: WeightFn) -> WeightVJPFn:
    """A ``weight_vjp`` for any differentiable ``weight_fn``: rebuild the block under autograd."""

    def weight_vjp(rows: slice, *params: Tensor) -> tuple[Tensor, VJP]:
        leaves = [p.detach().requires_grad_(p.requires_grad) for p in params]
        with torch.enable_grad():
            weight = weight_fn(rows, *leaves)
        wanted = [leaf for leaf in leaves if leaf.requires_grad]

        def vjp(grad_weight: Tensor) -> list[Tensor | None]:
            grads = iter(torch.autograd.grad(weight, wanted, grad_weight) if wanted else ())
            return [next(grads) if leaf.requires_grad else None for leaf in leaves]

        return weight.detach(), vjp

    return weight_vjp


def matmul_dtype(x: Tensor) -> torch.dtype:
    """The dtype the surrounding autocast region would run a matmul in."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def autocast_off(like: Tensor) -> torch.autocast:
    """No autocast on ``like``'s device, wherever a weight is built from its factors.

    Under bf16 autocast ``U V`` would be a bf16 matmul, and the sine's phase ``ω·UV``, with ω in
    the hundreds, would carry its rounding: the row-blocked training path, the eval cache, a
    merge, an export and the rank diagnostics would each see another weight than the factors
    make. Only ``fused=False`` builds under the caller's autocast, as plain autograd would.
    """
    return torch.autocast(like.device.type, enabled=False)


def _row_blocks(n_rows: int, block_rows: int) -> list[slice]:
    return [slice(i, min(i + block_rows, n_rows)) for i in range(0, n_rows, block_rows)]


class _BlockwiseLinear(torch.autograd.Function):
    """``y = x @ W.T`` with ``W`` built row block by row block from ``params``.

    Only the input (in the matmuls' dtype) and the parameters are saved; backward rebuilds each
    block with ``weight_vjp``. Blocks are built in the parameters' precision (fp32) with autocast
    off, whatever the caller's: the sine's argument ``ω·UV`` is large and its phase must not be
    rounded to 8 bits. Only the finished block is cast to the autocast dtype for the matmul, and
    the input gradient is accumulated over blocks (where there are several) in at least fp32.
    That backward builds no graph, so it is marked once-differentiable: a second derivative
    (a gradient penalty) raises instead of silently missing the factors; ``fused=False`` has one.
    """

    @staticmethod
    def forward(ctx, x, bias, weight_fn, weight_vjp, n_rows, block_rows, *params):  # type: ignore[override]
        compute_dtype = matmul_dtype(x)
        x2d = x.reshape(-1, x.shape[-1]).to(compute_dtype)
        bias = None if bias is None else bias.to(compute_dtype)
        blocks = _row_blocks(n_rows, block_rows)

        def block_output(rows: slice) -> Tensor:
            weight = weight_fn(rows, *params).to(compute_dtype)
            if bias is None:
                return x2d @ weight.T
            return torch.addmm(bias[rows], x2d, weight.T)

        with torch.no_grad(), autocast_off(x):
            if len(blocks) == 1:  # the whole weight fits one block: no output copy
                out = block_output(blocks[0])
            else:
                out = x2d.new_empty(x2d.shape[0], n_rows)
                for rows in blocks:
                    out[:, rows] = block_output(rows)
        ctx.weight_vjp = weight_vjp
        ctx.block_rows = block_rows
        ctx.n_rows = n_rows
        ctx.compute_dtype = compute_dtype
        ctx.x_dtype = x.dtype
        ctx.x_shape = x.shape
        # The input as the matmuls read it: under autocast a bf16 copy, half the memory of an
        # fp32 input, and not cast a second time in the backward pass.
        ctx.save_for_backward(x2d, *params)
        return out.reshape(*x.shape[:-1], n_rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        x2d, *params = ctx.saved_tensors
        dtype = ctx.compute_dtype
        g2d = grad_out.reshape(-1, ctx.n_rows).to(dtype)
        need_x = ctx.needs_input_grad[0]
        need_params = any(ctx.needs_input_grad[6:])
        acc_dtype = torch.promote_types(dtype, torch.float32)
        grad_x: Tensor | None = None
        grads: list[Tensor | None] = [None] * len(params)
        blocks = _row_blocks(ctx.n_rows, ctx.block_rows)
        with torch.no_grad(), autocast_off(x2d):
            for rows in blocks:
                weight, vjp = ctx.weight_vjp(rows, *params)
                g_rows = g2d[:, rows]
                if need_x:
                    w = weight.to(dtype)
                    if grad_x is None:
                        # One block is one matmul: nothing to accumulate, so no wider copy.
                        grad_x = g_rows @ w if len(blocks) == 1 else (g_rows @ w).to(acc_dtype)
                    elif acc_dtype == dtype:
                        grad_x.addmm_(g_rows, w)
                    else:
                        grad_x += (g_rows @ w).to(acc_dtype)
                weight_dtype = weight.dtype
                del weight
                if need_params:
                    block_grads = vjp((g_rows.T @ x2d).to(weight_dtype))
                    for i, g in enumerate(block_grads):
                        if g is not None and ctx.needs_input_grad[6 + i]:
                            grads[i] = g if grads[i] is None else grads[i].add_(g)
        if grad_x is not None:
            grad_x = grad_x.reshape(ctx.x_shape).to(ctx.x_dtype)
        # CPU and CUDA reductions accumulate low-precision floats in fp32 already; asking for
        # dtype=fp32 here would first copy the whole gradient to fp32.
        grad_bias = g2d.sum(0).to(acc_dtype) if ctx.needs_input_grad[1] else None
        return (grad_x, grad_bias, None, None, None, None, *grads)


def blockwise_linear(
    x: Tensor,
    weight_fn: WeightFn,
    params_fn: Callable[[], Sequence[Tensor]],
    n_rows: int,
    bias: Tensor | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    weight_vjp: WeightVJPFn | None = None,
) -> Tensor:
    """``x @ W.T + bias`` where ``W[rows] = weight_fn(rows, *params_fn())``, a block at a time.

    ``params_fn()`` gives every tensor ``weight_fn`` reads that may need a gradient (frozen
    tensors may be passed too and get none). It runs with autocast off, as the blocks are
    built: a factor that a variant computes from others (LoRA-XS's ``B R``) then has the
    parameters' precision too, instead of meeting them as an autocast bf16 product.
    ``weight_vjp`` is the block's backward; by default autograd through ``weight_fn``.
    """
    block_rows = max(1, block_elems // max(1, x.shape[-1]))
    weight_vjp = weight_vjp or autograd_vjp(weight_fn)
    with autocast_off(x):
        params = params_fn()
    return _BlockwiseLinear.apply(x, bias, weight_fn, weight_vjp, n_rows, block_rows, *params)
