"""Training a language model with truncated backpropagation through time, in a run folder.

:class:`LMTask` is what is particular to language modelling: the model over the corpus'
vocabulary, contiguous segments, the state carried (detached) from one segment to the next or
reset, the loss, validation in bits per byte, and the carried state as part of the checkpoint (so
that a resumed run continues the very same streams). :func:`train` runs it in a run folder:

``RUN/config.json``    the resolved config (a changed model or data field is refused on resume)
``RUN/tokenizer.json`` the vocabulary (a mismatch with the data on resume is refused)
``RUN/checkpoint.pt``  model, optimiser, schedule, step, carried state, RNG (atomic)
``RUN/best.pt``        the model of the best validation bits per byte
``RUN/metrics.jsonl``  one JSON object per logged step / validation
``RUN/final.json``     held-out metrics (carried and reset state) of the best model, and samples

Re-running the same command resumes from the checkpoint. The first Ctrl-C (or SIGTERM) finishes
the step, saves and stops; a non-finite loss stops the run with the advice to lower ``--lr``.
``--time-limit`` ends training early (the demo's bound on a loaded machine).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fwp.config import read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.layers import detach_state
from fwp.lm.config import LMConfig, from_dict
from fwp.lm.data import Corpus, load_corpus
from fwp.lm.evaluate import evaluate
from fwp.lm.generate import generate
from fwp.lm.model import FwpLM
from fwp.lm.segments import Segments
from fwp.lm.tokenizer import describe, tokenizer_from_dict

CONFIG, TOKENIZER, CHECKPOINT, BEST = "config.json", "tokenizer.json", "checkpoint.pt", "best.pt"
METRICS, FINAL = "metrics.jsonl", "final.json"
# Fields that shape the model, the data or the loss: a resumed run may not change them.
FIXED = ("data", "tokenizer", "network", "segment_len", "batch_size", "carry_state",
         "attention_window", "seed")


def schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at
    ``total`` (the public code's ``--scheduler cosine`` with ``--warmup_step``)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class LMTask:
    """Model, optimiser and data of one run, stepped one segment batch at a time."""

    def __init__(self, config: LMConfig, corpus: Corpus) -> None:
        self.config, self.corpus = config, corpus
        torch.manual_seed(config.seed)
        self.model = FwpLM(config.spec(corpus.tokenizer.vocab_size))
        self.segments = Segments(corpus.tokens["train"], config.batch_size, config.segment_len)
        Segments(corpus.tokens["valid"], config.eval_streams, config.segment_len, "valid")
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: schedule(s, config.warmup_steps, config.steps))
        self.carried: list[Any] | None = None
        self.step_index = 0

    def step(self) -> float:
        """One optimiser step on the next segment batch; returns the loss (nats per token)."""
        i, config = self.step_index, self.config
        if self.segments.starts_stream(i) or not config.carry_state:
            self.carried = None
        inputs, targets = self.segments.batch(i)
        logits, state = self.model(inputs, self.carried)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        if not torch.isfinite(loss):
            raise UserError(f"the loss is {loss.item()} at step {i + 1}: training diverged; "
                            f"lower --lr (now {config.lr}) or raise --warmup-steps")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if config.carry_state:
            self.carried = self.model.trim_cache(detach_state(state), config.window)
        self.step_index += 1
        return loss.item()

    def validate(self, max_tokens: int | None = None, modes: tuple[str, ...] | None = None,
                 split: str = "valid") -> dict[str, dict[str, float]]:
        """Held-out metrics; by default in the mode the model is trained for (carried state or
        reset per segment)."""
        c = self.config
        modes = modes or (("carried",) if c.carry_state else ("reset",))
        return evaluate(self.model, self.corpus.tokens[split], self.corpus.bytes_per_token(split),
                        c.segment_len, c.window if c.carry_state else 0,
                        c.eval_tokens if max_tokens is None else max_tokens, c.eval_streams,
                        modes)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step_index,
                "carried": self.carried, "rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_index = state["step"]
        self.carried = state["carried"]
        torch.set_rng_state(state["rng"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomic; tensors, numbers, strings and containers only (loadable with weights_only)."""
    write_atomic(path, state)


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the same user problem
        raise UserError(f"cannot read {path} ({type(error).__name__}): the file is damaged or "
                        f"not an fwp checkpoint; delete it to restart the run") from None


def check_resume(config: LMConfig, out: Path, corpus: Corpus) -> bool:
    """Whether ``out`` holds a run to resume; refuses a changed model/data field and a
    vocabulary that differs from the run's."""
    if not (out / CHECKPOINT).is_file():
        return False
    saved, now = read_file(out / CONFIG), to_dict(config)
    changed = [f"--{k.replace('_', '-')} {saved.get(k)!r} → {now[k]!r}" for k in FIXED
               if k in saved and saved[k] != now[k]]
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} on resume: {out} was trained with "
                        f"the old values; drop the flags, or train a new run with another --out")
    saved_tok = json.loads((out / TOKENIZER).read_text())
    if saved_tok != corpus.tokenizer.to_dict():
        raise UserError(
            f"vocabulary mismatch: {out} was trained with "
            f"{describe(tokenizer_from_dict(saved_tok))}, the data now gives "
            f"{describe(corpus.tokenizer)}; resume with the run's data, or use another --out")
    return True


class Stop:
    """The first SIGINT/SIGTERM asks the loop to save and stop; the second aborts."""

    def __init__(self) -> None:
        self.requested, self.previous = False, {}

    def __enter__(self) -> Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread
                break
        return self

    def handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nfwp: stopping after this step and saving (again to abort)", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(config: LMConfig, out: Path, say: Any = print) -> dict[str, Any]:
    """Train (or resume) the run in ``out``; returns ``final.json``'s content (or, when stopped
    early, ``{"stopped_at": step}``)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    corpus = load_corpus(config.data, config.tokenizer)
    task = LMTask(config, corpus)
    resumed = check_resume(config, out, corpus)
    out.mkdir(parents=True, exist_ok=True)
    best = math.inf
    if resumed:
        state = load(out / CHECKPOINT)
        task.load_state_dict(state)
        best = state["best"]
        say(f"resuming {out} at step {task.step_index}")
    else:
        write_atomic(out / CONFIG, to_dict(config))
        write_atomic(out / TOKENIZER, corpus.tokenizer.to_dict())
        (out / METRICS).unlink(missing_ok=True)
    say(f"{corpus.describe()}; {describe(corpus.tokenizer)}; model {config.network.layers}, "
        f"{task.model.n_parameters():,} parameters")
    start, losses = time.perf_counter(), []
    limit = config.time_limit * 60 or math.inf
    timed_out = False
    with Stop() as stop, (out / METRICS).open("a") as log:
        while task.step_index < config.steps and not (stop.requested or timed_out):
            losses.append(task.step())
            step = task.step_index
            timed_out = time.perf_counter() - start > limit
            if step % config.eval_every and step != config.steps and not (stop.requested
                                                                          or timed_out):
                continue
            bpb = next(iter(task.validate().values()))["bits_per_byte"]
            row = {"step": step, "train_loss": sum(losses) / len(losses), "val_bpb": bpb,
                   "lr": task.scheduler.get_last_lr()[0],
                   "seconds": time.perf_counter() - start}
            log.write(json.dumps(row) + "\n")
            log.flush()
            losses = []
            say(f"step {step}/{config.steps}: train {row['train_loss']:.3f} nats/token, "
                f"valid {bpb:.3f} bits/byte ({row['seconds']:.0f} s)")
            if bpb < best:
                best = bpb
                save(out / BEST, {"model": task.model.state_dict(), "step": step, "bpb": bpb})
            save(out / CHECKPOINT, {**task.state_dict(), "best": best})
    if timed_out:
        say(f"--time-limit {config.time_limit} min reached at step {task.step_index}")
    elif task.step_index < config.steps:
        say(f"stopped at step {task.step_index}; the same command resumes")
        return {"stopped_at": task.step_index}
    return finish(task, out, say)


def finish(task: LMTask, out: Path, say: Any) -> dict[str, Any]:
    """Held-out metrics of the best model (``final_eval_tokens``, carried and reset state), the
    unigram bar beside them, and a sample continuing the validation text's first 16 tokens."""
    task.model.load_state_dict(load(out / BEST)["model"])
    result = {"valid": task.validate(task.config.final_eval_tokens, ("carried", "reset")),
              "unigram_bits_per_byte": task.corpus.unigram_bits_per_byte("valid"),
              "parameters": task.model.n_parameters()}
    for mode, m in result["valid"].items():
        say(f"valid ({mode} state): {m['bits_per_byte']:.3f} bits/byte, perplexity "
            f"{m['perplexity']:.2f} per token")
    say(f"unigram bar (training byte frequencies): {result['unigram_bits_per_byte']:.3f} "
        f"bits/byte")
    if task.config.sample_tokens:
        prompt = task.corpus.tokenizer.decode(task.corpus.tokens["valid"][:16])
        result["sample"] = sample_text(task, prompt, task.config.sample_tokens)
        say(f"sample (temperature 0.8, top-p 0.95):\n{result['sample']}")
    write_atomic(out / FINAL, result)
    return result


def sample_text(task: LMTask, prompt: str, n: int, seed: int = 0) -> str:
    tok = task.corpus.tokenizer
    ids = torch.as_tensor(tok.encode(prompt).astype("int64"))[None]
    out, _ = generate(task.model.eval(), ids, n, temperature=0.8, top_p=0.95,
                      generator=torch.Generator().manual_seed(seed))
    return tok.decode(out[0].tolist())


def load_run(run: Path, which: str = BEST) -> tuple[LMConfig, FwpLM, dict]:
    """A trained run's config, model (eval mode) and saved tokenizer dict."""
    if not (run / CONFIG).is_file():
        raise UserError(f"{run} is not an fwp lm run folder (no {CONFIG}); train one with "
                        f"fwp lm train --out {run}")
    config = from_dict(read_file(run / CONFIG), str(run / CONFIG))
    tokenizer = json.loads((run / TOKENIZER).read_text())
    model = FwpLM(config.spec(tokenizer_from_dict(tokenizer).vocab_size))
    path = run / which if (run / which).is_file() else run / CHECKPOINT
    model.load_state_dict(load(path)["model"])
    return config, model.eval(), tokenizer
