"""The fused CPU kernels' build cache: keyed by what changes the binary, announced, and never
mistaken for unavailable when the build is interrupted (fault injected: a Ctrl-C mid-build)."""

import os
import shutil
import signal

import pytest
import torch

from fwp.ops import _cpp


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A second copy of the C++ sources, as another checkout of fwp would have."""
    copy = tmp_path / "checkout" / "csrc"
    shutil.copytree(_cpp.CSRC, copy)
    return copy


def test_cache_key_follows_the_binary_not_the_checkout(checkout, monkeypatch):
    compiler = "/usr/bin/c++"
    monkeypatch.setattr(_cpp, "_compiler_version", lambda c: "c++ 12.2.0")
    here = _cpp.build_dir(_cpp.build_inputs(compiler))
    monkeypatch.setattr(_cpp, "CSRC", checkout)
    assert _cpp.build_dir(_cpp.build_inputs(compiler)) == here  # same sources: shared build
    (checkout / "kernels.h").write_text((checkout / "kernels.h").read_text() + "\n// edited\n")
    edited = _cpp.build_dir(_cpp.build_inputs(compiler))
    assert edited != here
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _cpp.build_dir(_cpp.build_inputs(compiler)) not in (here, edited)
    monkeypatch.setattr(_cpp, "_compiler_version", lambda c: "c++ 13.1.0")
    assert len({here, edited, _cpp.build_dir(_cpp.build_inputs(compiler)),
                _cpp.build_dir(_cpp.build_inputs("/opt/clang++"))}) == 4


def test_ctrl_c_during_the_build_stops_instead_of_falling_back(tmp_path, monkeypatch, capsys):
    """Training installs a SIGINT handler that only asks to stop after the step; the compiler
    dies of the same Ctrl-C. The build must raise KeyboardInterrupt, not report "unavailable"
    (which would move the run to the slower path), and leave no build marked done."""
    if _cpp._compiler() is None:
        pytest.skip("no C++ compiler")
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(_cpp, "_find_ninja", lambda: True)

    def interrupted_build(**kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise RuntimeError("Error building extension 'fwp_fused_cpu': ninja: build stopped: "
                           "interrupted by user.")

    monkeypatch.setattr(cpp_extension, "load", interrupted_build)
    requests = []
    previous = signal.signal(signal.SIGINT, lambda *a: requests.append(a))  # training's handler
    try:
        with pytest.raises(KeyboardInterrupt):
            _cpp.build()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert requests == []  # the Ctrl-C went to the build, not to "stop after the step"
    finally:
        signal.signal(signal.SIGINT, previous)
    folder = _cpp.build_dir(_cpp.build_inputs(_cpp._compiler()))
    assert not (folder / _cpp.DONE).exists()
    assert "compiling the CPU kernels (once" in capsys.readouterr().err


def test_a_failed_build_is_reported_not_cached_as_done(tmp_path, monkeypatch):
    if _cpp._compiler() is None:
        pytest.skip("no C++ compiler")
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(_cpp, "_find_ninja", lambda: True)

    def failing_build(**kwargs):
        raise RuntimeError("Error building extension\nkernels.h:1: error: something")

    monkeypatch.setattr(cpp_extension, "load", failing_build)
    module, why = _cpp.build()
    assert module is None and "compiling fwp/csrc failed" in why and "error: something" in why
    assert not (_cpp.build_dir(_cpp.build_inputs(_cpp._compiler())) / _cpp.DONE).exists()


def test_a_lock_left_by_a_killed_build_is_cleared(tmp_path):
    """torch's lock file survives a kill -9 and would make every later build wait forever; ours
    (flock) dies with its process, so inside it torch's lock is known to be stale."""
    (tmp_path / "lock").write_text("")
    with _cpp._exclusive(tmp_path):
        assert not (tmp_path / "lock").exists()
