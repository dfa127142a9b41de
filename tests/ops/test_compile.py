"""The compiled operators are torch.library custom ops: torch.compile(fullgraph=True) traces
through them (fake implementations, registered autograd) and matches eager, forward and
gradients; the Triton ones under TRITON_INTERPRET=1 on CPU tensors."""

from __future__ import annotations

import pytest
import torch

from fwp.ops import _cpp, _triton_utils, delta_rule, srwm, srwm_rows
from fwp.ops._compile_marks import constant_for_compile


def test_the_constant_mark_is_torch_compilers():
    def f() -> int:
        return 1

    assert getattr(torch.compiler.assume_constant_result(f), "_dynamo_marked_constant", False)
    assert constant_for_compile(lambda: 1)._dynamo_marked_constant
    assert torch.library.opcheck  # the ops below are registered under torch.ops.fwp
    for name in ("delta_rule_fused_cpu", "srwm_fused_cpu", "delta_rule_triton", "srwm_triton"):
        assert hasattr(torch.ops.fwp, name)


def run(fn, tensors):  # noqa: ANN001, ANN201
    for t in tensors:
        t.grad = None
    outputs = fn(*tensors)
    sum(o.sum() for o in outputs if o is not None).backward()
    return [o.detach() for o in outputs if o is not None], [t.grad.clone() for t in tensors]


def delta_inputs(state: bool) -> list[torch.Tensor]:
    B, T, H, K, V = 2, 7, 2, 5, 6
    q, k = (torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1) for _ in range(2))
    tensors = [q, k, torch.randn(B, T, H, V), torch.rand(B, T, H)]
    if state:
        tensors.append(torch.randn(B, H, K, V))
    return [t.requires_grad_() for t in tensors]


def compare(fn, tensors) -> None:  # noqa: ANN001
    torch._dynamo.reset()
    eager = run(fn, tensors)
    compiled = run(torch.compile(fn, fullgraph=True, backend="aot_eager"), tensors)
    for a, b in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def modes(names: tuple[str, ...]) -> list:  # noqa: ANN201
    out = []
    for mode in names:
        ok, why = _cpp.available() if mode == "fused_cpu" else _triton_utils.available("cpu")
        out.append(pytest.param(mode, marks=pytest.mark.skipif(not ok, reason=why)))
    return out


@pytest.mark.parametrize("mode", modes(("fused_cpu", "triton", "triton_chunk")))
@pytest.mark.parametrize("state", [False, True])
def test_delta_rule_compiles(mode, state):
    def fn(q, k, v, beta, s0=None):  # noqa: ANN001, ANN202
        return delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True, mode=mode,
                          chunk_size=16)

    compare(fn, delta_inputs(state))


@pytest.mark.parametrize("mode", modes(("fused_cpu", "triton")))
@pytest.mark.parametrize("shared", [True, False])
def test_srwm_compiles(mode, shared):
    B, T, H, D = 2, 6, 2, 4
    W0 = torch.randn(*([] if shared else [B]), H, srwm_rows(D, D, 4), D) / 2
    tensors = [torch.randn(B, T, H, D).requires_grad_(), W0.requires_grad_()]
    compare(lambda x, W: srwm(x, W, n_beta=4, mode=mode), tensors)
