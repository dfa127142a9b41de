"""fwp.allocator: glibc keeps freed memory, and what is computed does not change. In a child
process: the setting is process-wide and cannot be undone, and other tests (any that run
``fwp.cli.main``) set it too."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource
import torch
from fwp.allocator import keep_freed_memory

def step(model, x):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.zero_grad(set_to_none=True)
    model(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return grads, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
                            torch.nn.MaxPool2d(2))
x = torch.rand(400, 1, 28, 28)  # 400 × 32 × 28 × 28 floats: 40 MB, above glibc's mmap limit
for _ in range(2):
    before, faults_before = step(model, x)
kept = keep_freed_memory()
for _ in range(4):  # the first steps with the setting grow the heap to the step's needs
    after, faults_after = step(model, x)
print(json.dumps({"kept": kept, "before": faults_before, "after": faults_after,
                  "same": all(torch.equal(a, b) for a, b in zip(before, after))}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_and_the_numbers_are_the_same():
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kept"] and result["same"], result
    assert result["after"] < result["before"] / 4, result
