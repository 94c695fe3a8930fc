"""Linear layers on CPU through oneDNN where that is faster than torch's default GEMM.

torch's CPU wheels run an fp32 ``nn.Linear`` as MKL's sgemm. MKL picks its code path by CPU vendor: on this
project's AMD EPYC machine (AVX-512) it runs the AVX2 path, ~95 GFLOP/s on one core, while oneDNN (shipped inside
the same wheel, ``torch.ops.mkldnn._linear_pointwise``) uses AVX-512 and reaches ~215 GFLOP/s on the same shapes
(``benchmarks/cpu_linear.py``). Both compute the same fp32 products; only the summation order differs (outputs
agree to ~1e-6 relative), as between any two BLAS builds or thread counts.

:func:`fast_linears` gives every fp32 ``nn.Linear`` of a CPU model a forward through oneDNN (with a backward whose
input and weight gradients also go through it), where :func:`cpu_linear_backend` chose oneDNN. The choice:
``SIMASSETS_CPU_LINEAR`` = ``onednn`` or ``aten`` pins it; ``auto`` (the default) times both once per process on a
transformer-sized product and takes oneDNN only when it is at least 1.25x faster, so a CPU where MKL's own fast
path runs (Intel) keeps it. Forward hooks, parameters and ``state_dict`` are untouched; a layer moved to another
device or dtype falls back to ``F.linear``.
"""

from __future__ import annotations

import os
import time
import types
from typing import Any

import torch  # imported only by the model loaders, which load torch anyway
import torch.nn as nn
import torch.nn.functional as F

BACKENDS = ("onednn", "aten")
MIN_GAIN = 1.25  # oneDNN must beat torch's GEMM by this much to be used: no flapping between near-equal kernels
_CHOSEN: list[str] = []


def _pointwise(x: Any, weight: Any, bias: Any) -> Any:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _time(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return time.perf_counter() - start


def cpu_linear_backend() -> str:
    """``onednn`` or ``aten``: the setting, else the faster of the two on this CPU (timed once per process)."""
    if _CHOSEN:
        return _CHOSEN[0]
    setting = os.environ.get("SIMASSETS_CPU_LINEAR", "auto").strip().lower() or "auto"
    if setting not in (*BACKENDS, "auto"):
        raise ValueError(f"SIMASSETS_CPU_LINEAR must be one of onednn, aten, auto; got {setting!r}")
    available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    if setting == "onednn" and not available:
        raise RuntimeError("SIMASSETS_CPU_LINEAR=onednn, but this torch build has no oneDNN linear")
    if setting != "auto":
        choice = setting
    elif not available:
        choice = "aten"
    else:
        with torch.no_grad():
            x, w = torch.randn(256, 576), torch.randn(1536, 576)  # a SmolLM2 MLP product of a 256-token row
            aten, onednn = 0.0, 0.0
            for _ in range(3):  # alternating, so a burst of load hits both
                aten += _time(lambda: F.linear(x, w), 4)
                onednn += _time(lambda: _pointwise(x, w, None), 4)
        choice = "onednn" if aten >= MIN_GAIN * onednn else "aten"
    _CHOSEN[:] = [choice]
    return choice


class _OneDNNLinear(torch.autograd.Function):
    """``y = x W^T + b`` through oneDNN, differentiable: the input gradient is ``g W`` (oneDNN with ``W^T`` as the
    weight), the weight gradient ``g^T x`` (oneDNN with ``x^T``)."""

    @staticmethod
    def forward(ctx, x2, w, b):
        ctx.save_for_backward(x2, w)
        ctx.has_bias = b is not None
        return _pointwise(x2, w, b)

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved_tensors
        g = g.contiguous()
        gx = _pointwise(g, w.t(), None) if ctx.needs_input_grad[0] else None
        gw = _pointwise(g.t(), x2.t(), None) if ctx.needs_input_grad[1] else None
        gb = g.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _forward(self: Any, x: Any) -> Any:
    w = self.weight
    if w.device.type != "cpu" or w.dtype != torch.float32 or x.dtype != torch.float32:
        return F.linear(x, w, self.bias)
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                    or (self.bias is not None and self.bias.requires_grad)):
        y = _OneDNNLinear.apply(x2, w, self.bias)
    else:
        y = _pointwise(x2, w, self.bias)
    return y.reshape(*x.shape[:-1], w.shape[0])


def fast_linears(model: Any) -> str:
    """Route every fp32 ``nn.Linear`` of ``model`` on CPU through oneDNN when :func:`cpu_linear_backend` chose it;
    returns the backend in use (recorded in the rows' parameters)."""
    params = list(model.parameters())
    if not params or params[0].device.type != "cpu":
        return "aten"
    if cpu_linear_backend() != "onednn":
        return "aten"
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32:
            module.forward = types.MethodType(_forward, module)
    return "onednn"


def plain_linears(model: Any) -> Any:
    """Undo :func:`fast_linears` on ``model`` (every linear layer back to ``F.linear``); returns the model. For
    baselines that must run as a plain ``transformers`` model does, such as lm-eval's ``HFLM`` in the benchmarks."""
    for module in model.modules():
        if getattr(module, "forward", None) is not None and getattr(module.forward, "__func__", None) is _forward:
            del module.forward
    return model
