"""The run core: what every workflow's training shares, written once.

- :class:`RunFolder` — the run folder (config.json, checkpoint.pt, best.pt, metrics.jsonl, tb/),
  the checks of ``--out`` and the one-writer lock (:mod:`fwp.runs.folder`);
- :func:`save_checkpoint` / :func:`load_checkpoint` — atomic files loaded with
  ``weights_only=True`` (:mod:`fwp.runs.checkpoint`); :func:`rng_state` / :func:`set_rng_state`;
- the resume policy of each config field, declared once in :func:`fwp.config.option`
  (``resume="match" | "announce" | "runtime"``; :mod:`fwp.runs.policy`);
- :class:`StopRequest` — SIGINT and SIGTERM: finish the step, save, stop;
- :class:`MetricsLog` — metrics.jsonl, TensorBoard, progress;
- :class:`Training` and :func:`fit` — the generic loop (validation, best.pt, checkpoints,
  resume, the NaN stop), and :mod:`fwp.runs.sweep`, the one sweep engine (grid × seeds).

A workflow supplies its step, its validation and its extra state::

    from fwp.runs import RunFolder, Training, fit

    class MyTraining(Training):
        score, higher_is_better = "accuracy", True      # what chooses best.pt

        def __init__(self, config):
            self.config = config                          # a dataclass schema of fwp.config
            self.model = build_model(config)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
            self.data = DataStream(config.seed)           # anything with a position

        def train_step(self) -> dict[str, float]:         # one optimiser step
            loss = self.model.loss(self.data.next_batch())
            self.optimizer.zero_grad(); loss.backward(); self.optimizer.step()
            return {"loss": loss.item()}

        def validate(self) -> dict[str, float]:
            return {"accuracy": evaluate(self.model), "loss": ...}

        def state_dict(self):                             # saved beside model and optimiser
            return {"data": self.data.state_dict()}

        def load_state_dict(self, checkpoint):
            self.data.load_state_dict(checkpoint["data"])

    folder = RunFolder(out)
    with folder.locked():                                 # a second writer is refused
        summary = fit(MyTraining(config), folder, steps=config.steps,
                      eval_every=config.eval_every, resume=resume)

``fit`` resumes from the checkpoint (``resume=None``: when there is one), refuses a changed
config field whose policy is ``match``, announces the others, writes config.json only once every
check has passed, truncates metrics.jsonl to the checkpoint's step, restores every RNG, stops on a
non-finite value (keeping the last good checkpoint), and saves on SIGINT / SIGTERM.
"""

from fwp.errors import RunStopped
from fwp.runs.checkpoint import load_checkpoint, plain, save_checkpoint
from fwp.runs.folder import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    RunFolder,
    check_output_path,
)
from fwp.runs.loop import Training, TrainingDiverged, fit
from fwp.runs.metrics import MetricsLog, read_metrics, truncate_metrics
from fwp.runs.policy import learning_differences, resume_changes
from fwp.runs.rng import rng_state, set_rng_state
from fwp.runs.signals import StopRequest
from fwp.runs.world import World, pick_device, setup_world

__all__ = [
    "BEST", "CHECKPOINT", "CONFIG", "METRICS", "MetricsLog", "RunFolder", "RunStopped",
    "StopRequest", "Training", "TrainingDiverged", "World", "check_output_path", "fit",
    "learning_differences", "load_checkpoint", "pick_device", "plain", "read_metrics",
    "resume_changes", "rng_state", "save_checkpoint", "set_rng_state", "setup_world",
    "truncate_metrics",
]
