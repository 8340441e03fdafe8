"""Make the first multi-threaded call of each MKL vector-math function as exact as the rest.

On CPU, PyTorch computes contiguous float32/float64 ``exp``, ``sin``, ``cos``, ``sqrt``, ``log``,
``tanh`` and a few others with oneMKL's vector math (VM, ``at::vml``), asking for its
high-accuracy kernel on every call. oneMKL 2024.2, the version inside current PyTorch wheels,
picks each function's kernel lazily on its first call, and that choice races: when the first
call runs on several intra-op threads at once, one thread may compute its whole chunk with a
low-accuracy kernel (``torch.exp``: relative errors up to 1.5e-4 instead of 6e-8). Later calls
are exact. So in a few processes in a hundred the first forward pass is slightly off, training
follows another trajectory, and the same seed stops giving the same result
(pytorch/pytorch#188792; benchmarks/RESULTS.md §7).

Calling each function once on a one-element tensor, which runs on the calling thread alone,
settles every choice before any parallel call can race on it.
"""

from __future__ import annotations

import torch

# PyTorch's unary ops that go through oneMKL VM for float32 and float64 (ATen/cpu/vml.h): each
# one-element call below reaches its vms*/vmd* function (checked under gdb, torch 2.15).
VM_OPS = (
    "acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp",
    "log", "log10", "log2", "sin", "sqrt", "tan", "tanh", "trunc",
)  # fmt: skip


def settle_vector_math() -> None:
    """Resolve oneMKL's kernel choice for every VM op on this thread; a no-op without MKL.

    Call it once per process before any parallel CPU work; the driver does so for every run.
    """
    if not torch.backends.mkl.is_available():
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in VM_OPS:
            getattr(torch, name)(x)
