"""Training a language model with truncated backpropagation through time, on the run core.

:class:`LMTraining` is what is particular to language modelling: the model over the corpus'
vocabulary, contiguous segments, the state carried (detached) from one segment to the next or
reset, the loss, validation in bits per byte, and the carried state as part of the checkpoint (so
that a resumed run continues the very same streams). :func:`fit` of :mod:`fwp.runs` runs it: the
run folder (``config.json``, ``checkpoint.pt``, ``best.pt`` of the best validation bits per byte,
``metrics.jsonl``), resume with each field's policy, SIGINT / SIGTERM, the NaN stop. Besides:

``RUN/tokenizer.json`` the vocabulary (a mismatch with the data on resume is refused)
``RUN/final.json``     held-out metrics (carried and reset state) of the best model, the unigram
                       bar beside them, and a sample

Re-running the same command resumes from the checkpoint, or returns ``final.json`` of a finished
run (more ``--steps`` continue it). ``--time-limit`` ends training at the first validation past
it (the demo's bound on a loaded machine).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fwp.config import read_file, write_atomic
from fwp.errors import RunStopped, UserError
from fwp.layers import detach_state
from fwp.lm.config import LMConfig, from_dict
from fwp.lm.data import Corpus, load_corpus
from fwp.lm.evaluate import evaluate
from fwp.lm.generate import generate
from fwp.lm.model import FwpLM
from fwp.lm.segments import Segments
from fwp.lm.tokenizer import describe, tokenizer_from_dict
from fwp.runs import BEST, CHECKPOINT, CONFIG, RunFolder, Training, fit, load_checkpoint

TOKENIZER, FINAL = "tokenizer.json", "final.json"


def schedule(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at
    ``total`` (the public code's ``--scheduler cosine`` with ``--warmup_step``)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def as_tuples(state: Any) -> Any:
    """A state read back from a checkpoint (which stores tuples as lists) in the layers' form:
    one list entry per block, tuples inside."""
    def convert(s: Any) -> Any:
        return tuple(convert(x) for x in s) if isinstance(s, list) else s

    return None if state is None else [convert(s) for s in state]


class LMTraining(Training):
    """AdamW with warm-up and cosine decay on contiguous segments; best validation bits/byte."""

    score, higher_is_better = "bits_per_byte", False
    resume_hint = restart_hint = ""  # re-running the same command resumes
    damaged_fix = "delete it and re-run the same command to train this run from the start"
    diverged_fix = "lower --lr or raise --warmup-steps, then re-run the command"

    def __init__(self, config: LMConfig, corpus: Corpus, out: Path) -> None:
        self.config, self.corpus, self.out = config, corpus, out
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
        self.started = time.perf_counter()

    def prepare(self) -> None:
        write_atomic(self.out / TOKENIZER, self.corpus.tokenizer.to_dict())
        self.started = time.perf_counter()

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the next segment batch (nats per token)."""
        config = self.config
        if self.segments.starts_stream(self.step) or not config.carry_state:
            self.carried = None
        inputs, targets = self.segments.batch(self.step)
        logits, state = self.model(inputs, self.carried)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        if not math.isfinite(loss.item()):  # the loop stops before anything is saved
            return {"loss": loss.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        if config.carry_state:
            self.carried = self.model.trim_cache(detach_state(state), config.window)
        return {"loss": loss.item(), "lr": lr}

    def evaluate(self, max_tokens: int, modes: tuple[str, ...],
                 split: str = "valid") -> dict[str, dict[str, float]]:
        c = self.config
        return evaluate(self.model, self.corpus.tokens[split], self.corpus.bytes_per_token(split),
                        c.segment_len, c.window, max_tokens,
                        c.eval_streams, modes)

    def validate(self) -> dict[str, float]:
        """Bits per byte of ``eval_tokens`` validation tokens, read as the model is trained
        (state carried through the text, or reset per segment)."""
        mode = "carried" if self.config.carry_state else "reset"
        m = self.evaluate(self.config.eval_tokens, (mode,))[mode]
        return {"bits_per_byte": m["bits_per_byte"], "perplexity": m["perplexity"]}

    def should_stop(self) -> bool:
        limit = self.config.time_limit * 60
        return bool(limit) and time.perf_counter() - self.started > limit

    def state_dict(self) -> dict[str, Any]:
        return {"carried": self.carried}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.carried = as_tuples(checkpoint["carried"])

    def train_line(self, values: dict[str, float]) -> str:
        return f"train {values.get('loss', math.nan):.3f} nats/token"

    def validation_line(self, values: dict[str, float], best: dict[str, Any]) -> str:
        return (f"valid {values['bits_per_byte']:.3f} bits/byte (best "
                f"{best.get('bits_per_byte', math.nan):.3f} at step {best['step']})")


def check_vocabulary(out: Path, corpus: Corpus) -> None:
    """Refuse to resume a run whose vocabulary differs from the one the data gives now."""
    if not (out / CHECKPOINT).is_file() or not (out / TOKENIZER).is_file():
        return
    saved = json.loads((out / TOKENIZER).read_text())
    if saved != corpus.tokenizer.to_dict():
        raise UserError(
            f"vocabulary mismatch: {out} was trained with {describe(tokenizer_from_dict(saved))}, "
            f"the data now gives {describe(corpus.tokenizer)}; resume with the run's data, or "
            f"use another --out")


def train(config: LMConfig, out: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) the run in ``out``; returns ``final.json``'s content. A stop by
    SIGINT / SIGTERM raises :class:`RunStopped` (the checkpoint is saved)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    corpus = load_corpus(config.data, config.tokenizer)
    training = LMTraining(config, corpus, out)  # refuses a context longer than the data
    run = RunFolder(out)
    with run.locked():
        done = run.finished(FINAL, config, say)
        if done is not None:
            return done
        check_vocabulary(out, corpus)
        say(f"{corpus.describe()}; {describe(corpus.tokenizer)}; model {config.network.layers}, "
            f"{training.model.n_parameters():,} parameters")
        summary = fit(training, run, steps=config.steps, eval_every=config.eval_every,
                      progress=False, tensorboard=False, say=say)
        if summary["status"] == "interrupted":
            raise RunStopped(f"{out}: stopped at step {summary['step']} with its checkpoint "
                             f"saved; the same command resumes it", summary["signal"])
        if training.should_stop() and training.step < config.steps:
            say(f"--time-limit {config.time_limit} min reached at step {training.step}")
        return finish(training, out, say)


def finish(training: LMTraining, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Held-out metrics of the best model (``final_eval_tokens``, carried and reset state), the
    unigram bar beside them, and a sample continuing the validation text's first 16 tokens."""
    training.model.load_state_dict(load_checkpoint(out / BEST)["model"])
    config, corpus = training.config, training.corpus
    result = {"valid": training.evaluate(config.final_eval_tokens, ("carried", "reset")),
              "unigram_bits_per_byte": corpus.unigram_bits_per_byte("valid"),
              "parameters": training.model.n_parameters(), "steps": training.step,
              "train_seconds": round(time.perf_counter() - training.started, 1)}
    for mode, m in result["valid"].items():
        say(f"valid ({mode} state): {m['bits_per_byte']:.3f} bits/byte, perplexity "
            f"{m['perplexity']:.2f} per token")
    say(f"unigram bar (training byte frequencies): {result['unigram_bits_per_byte']:.3f} "
        f"bits/byte")
    if config.sample_tokens:
        prompt = corpus.tokenizer.decode(corpus.tokens["valid"][:16])
        result["sample"] = sample_text(training.model, corpus, prompt, config.sample_tokens)
        say(f"sample (temperature 0.8, top-p 0.95):\n{result['sample']}")
    write_atomic(out / FINAL, result)
    return result


def sample_text(model: FwpLM, corpus: Corpus, prompt: str, n: int, seed: int = 0) -> str:
    tok = corpus.tokenizer
    ids = torch.as_tensor(tok.encode(prompt).astype("int64"))[None]
    out, _ = generate(model.eval(), ids, n, temperature=0.8, top_p=0.95,
                      generator=torch.Generator().manual_seed(seed))
    return tok.decode(out[0].tolist())


def load_run(run: Path, which: str = BEST) -> tuple[LMConfig, FwpLM, dict]:
    """A trained run's config, model (eval mode) and saved tokenizer dict."""
    if not (run / CONFIG).is_file() or not (run / TOKENIZER).is_file():
        raise UserError(f"{run} is not an fwp lm run folder (no {CONFIG} and {TOKENIZER}); "
                        f"train one with fwp lm train --out {run}")
    config = from_dict(read_file(run / CONFIG), str(run / CONFIG))
    config.validate()
    tokenizer = json.loads((run / TOKENIZER).read_text())
    model = FwpLM(config.spec(tokenizer_from_dict(tokenizer).vocab_size))
    path = run / which if (run / which).is_file() else run / CHECKPOINT
    model.load_state_dict(load_checkpoint(path)["model"])
    return config, model.eval(), tokenizer
