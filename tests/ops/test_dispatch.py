import pytest
import torch

from fwp.errors import UserError
from fwp.ops import _cpp, srwm, srwm_rows
from fwp.ops._dispatch import Mode, _warn_skipped, pick_mode
from fwp.ops.srwm import AUTO as SRWM_AUTO
from fwp.ops.srwm import MODES as SRWM_MODES


def never(tensor):
    return False, "it needs a flux capacitor"


def fast(*args):
    return "fast"


def slow(*args):
    return "slow"


MODES = {"fast": Mode(fast, never), "slow": Mode(slow)}
AUTO = {"cpu": ["fast", "slow"], "default": ["slow"]}


def test_forced_mode_that_cannot_run_says_why():
    with pytest.raises(UserError, match="mode 'fast' cannot run here: it needs a flux capacitor"):
        pick_mode("op", "fast", MODES, AUTO, torch.zeros(1))


def test_unknown_mode_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown mode 'quick'.*'auto', 'fast', 'slow'"):
        pick_mode("op", "quick", MODES, AUTO, torch.zeros(1))


def test_auto_falls_back_with_one_warning():
    _warn_skipped.cache_clear()
    with pytest.warns(RuntimeWarning, match="cannot use 'fast' .*flux capacitor.*using 'slow'"):
        assert pick_mode("op", "auto", MODES, AUTO, torch.zeros(1)).fn is slow
    assert pick_mode("op", "slow", MODES, AUTO, torch.zeros(1)).fn is slow


def test_auto_on_cpu_prefers_the_fused_kernel_when_it_builds():
    x = torch.zeros(1, 2, 1, 3)
    chosen = pick_mode("srwm", "auto", SRWM_MODES, SRWM_AUTO, x)
    expected = "fused_cpu" if _cpp.available()[0] else "scan"
    assert chosen is SRWM_MODES[expected]


def test_every_mode_that_can_run_agrees_with_the_reference():
    x = torch.randn(2, 9, 2, 4, dtype=torch.float64)
    W0 = torch.randn(2, srwm_rows(4, 4), 4, dtype=torch.float64) / 2
    y_ref, W_ref = srwm(x, W0, mode="recurrent")
    for name, mode in SRWM_MODES.items():
        if mode.can_run(x)[0] and name != "triton":  # triton: float32 tests in test_triton.py
            y, W = srwm(x, W0, mode=name)
            torch.testing.assert_close(y, y_ref)
            torch.testing.assert_close(W, W_ref)
