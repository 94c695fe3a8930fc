"""The oneDNN linear layers: the same products as F.linear (forward, input, weight and bias gradients), hooks kept,
undone by plain_linears, fallback off CPU fp32, and the setting."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from simassets.core import kernels

pytestmark = pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_linear_pointwise"), reason="no oneDNN linear")


@pytest.fixture
def onednn(monkeypatch):
    monkeypatch.setenv("SIMASSETS_CPU_LINEAR", "onednn")
    monkeypatch.setattr(kernels, "_CHOSEN", [])
    yield
    kernels._CHOSEN.clear()


def _net(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96, bias=bias), nn.GELU(), nn.Linear(96, 32, bias=bias))


@pytest.mark.parametrize("bias", [False, True])
def test_forward_and_gradients_equal_torch_linear(onednn, bias):
    plain, fast = _net(bias), _net(bias)
    assert kernels.fast_linears(fast) == "onednn"
    assert all(getattr(m.forward, "__func__", None) is kernels._forward for m in fast if isinstance(m, nn.Linear))
    x = torch.randn(3, 7, 48)
    xp, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yp, yf = plain(xp), fast(xf)
    torch.testing.assert_close(yf, yp, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yp)
    (yp * g).sum().backward()
    (yf * g).sum().backward()
    torch.testing.assert_close(xf.grad, xp.grad, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the inference path (no autograd function)
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_hooks_fire_and_plain_linears_undoes(onednn):
    net = _net(False)
    kernels.fast_linears(net)
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    net(torch.randn(2, 48))
    assert seen == [torch.Size([2, 96])]
    kernels.plain_linears(net)
    assert all("forward" not in vars(m) for m in net)
    net(torch.randn(2, 48))
    assert len(seen) == 2


def test_other_dtypes_fall_back(onednn):
    net = _net(True)
    kernels.fast_linears(net)
    net.double()
    x = torch.randn(4, 48, dtype=torch.float64)
    y = net(x)
    assert y.dtype == torch.float64
    ref = F.linear(F.gelu(F.linear(x, net[0].weight, net[0].bias)), net[2].weight, net[2].bias)
    torch.testing.assert_close(y, ref)


def test_the_setting(monkeypatch):
    monkeypatch.setattr(kernels, "_CHOSEN", [])
    monkeypatch.setenv("SIMASSETS_CPU_LINEAR", "aten")
    net = _net(False)
    assert kernels.fast_linears(net) == "aten" and all("forward" not in vars(m) for m in net)
    monkeypatch.setattr(kernels, "_CHOSEN", [])
    monkeypatch.setenv("SIMASSETS_CPU_LINEAR", "fast")
    with pytest.raises(ValueError, match="SIMASSETS_CPU_LINEAR"):
        kernels.cpu_linear_backend()
    monkeypatch.setattr(kernels, "_CHOSEN", [])
    monkeypatch.setenv("SIMASSETS_CPU_LINEAR", "auto")
    assert kernels.cpu_linear_backend() in kernels.BACKENDS  # timed here; either is a valid answer
