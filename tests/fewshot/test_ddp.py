"""Two CPU processes under torchrun (gloo): each rank trains on its own episodes, and the
ranks' parameters stay identical (and equal to the checkpoint rank 0 writes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fwp.fewshot.checkpoint import CHECKPOINT, load_checkpoint

from .conftest import tiny_config

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import distributed as dist
    from fwp.fewshot.config import from_dict
    from fwp.fewshot.train import train

    config = from_dict(json.loads(open(sys.argv[1]).read()))
    summary = train(config, sys.argv[2], progress=False)
    rank = dist.get_rank()
    parameters = {k: v.detach() for k, v in summary["model"].named_parameters()}
    torch.save(parameters, f"{sys.argv[2]}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_processes_keep_identical_parameters(tiny_root, tmp_path):
    import json

    from fwp.config import to_dict

    config = tiny_config(tiny_root, steps=3, eval_every=3, beta2=1.0, beta3=1.0, accumulate=2)
    (tmp_path / "config.json").write_text(json.dumps(to_dict(config)))
    (tmp_path / "worker.py").write_text(WORKER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--standalone", str(tmp_path / "worker.py"), str(tmp_path / "config.json"), str(run)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(run / f"rank{r}.pt") for r in (0, 1)]
    saved = load_checkpoint(run / CHECKPOINT)
    assert saved["step"] == 3 and len(saved["rng"]) == 2
    # 2 ranks × 2 micro-batches × 4 episodes per step, one global stream.
    assert saved["sampler"]["next_episode"] == 3 * 2 * 2 * 4
    assert len(ranks[0]) > 10
    for key, value in ranks[0].items():  # BatchNorm statistics are rank 0's, broadcast by DDP
        assert torch.equal(value, ranks[1][key]), key
        assert torch.equal(value, saved["model"][key]), key
