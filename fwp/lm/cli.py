"""``fwp lm {train,eval,generate,sweep,report,export}``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fwp.errors import UserError
from fwp.lm.config import add_config_flags, config_from_args

SPLITS = ("valid", "test", "train")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fwp lm`` commands."""
    p = subparsers.add_parser(
        "train", help="train a language model (re-running the command resumes)",
        description="Train a decoder-only model over --layers on --data (the built-in stdlib "
                    "corpus by default), byte-level by default. Every field of the run config is "
                    "a flag; --preset demo learns in minutes on a CPU.")
    add_config_flags(p)
    p.add_argument("--out", metavar="RUN", default=None,
                   help="run folder (default: runs/lm/LAYERS-sSEED)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="held-out bits per byte and perplexity of a run")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp lm train")
    p.add_argument("--data", default=None,
                   help="text to score, read with the run's own vocabulary (default: the run's)")
    p.add_argument("--split", choices=SPLITS, default="valid", help="split scored")
    p.add_argument("--max-tokens", type=int, default=0, help="tokens scored (0: the whole split)")
    p.add_argument("--segment-len", type=int, default=None,
                   help="tokens per evaluated segment (default: the run's)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("generate", help="sample text from a run")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp lm train")
    p.add_argument("--prompt", default="\n", help="text the sample continues")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=0.95,
                   help="keep the smallest set of tokens with this probability (1: all)")
    p.add_argument("--samples", type=int, default=1, help="independent samples")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser(
        "sweep", help="models of equal parameter count × seeds, resumable, then the report",
        description="Train every [models.NAME] × seed of a grid file into DIR/runs/NAME/seedK "
                    "(finished runs are skipped, stopped ones resume: the same command "
                    "continues), each model widened to the grid's parameter count (the table "
                    "is printed first), then write DIR/report.md.")
    p.add_argument("dir", metavar="DIR", help="sweep folder")
    p.add_argument("--grid", default="layers", help="grid name in fwp/lm/grids or a .toml path")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the grid's")
    p.add_argument("--parameters", type=int, default=None, help="override the grid's size")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the grid's [set] table (repeatable)")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("report", help="(re)write a sweep's report.md")
    p.add_argument("dir", metavar="DIR", help="sweep folder")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "export", help="write a run as a Hugging Face model folder (needs fwp[hf])",
        description="Save the run's best model with save_pretrained, to be loaded with "
                    "AutoModelForCausalLM.from_pretrained after `import fwp.lm.hf`.")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp lm train")
    p.add_argument("--to", metavar="DIR", required=True, help="folder to write")
    p.set_defaults(func=cmd_export)


def cmd_train(args: argparse.Namespace) -> int:
    from fwp.lm.train import train

    config = config_from_args(args)
    out = Path(args.out or f"runs/lm/{'-'.join(config.network.layers)}-s{config.seed}")
    train(config, out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fwp.config import write_atomic
    from fwp.lm.data import load_corpus
    from fwp.lm.evaluate import evaluate
    from fwp.lm.tokenizer import tokenizer_from_dict
    from fwp.lm.train import load_run

    if args.max_tokens < 0:
        raise UserError(f"--max-tokens must be ≥ 0 (got {args.max_tokens})")
    run = Path(args.run)
    config, model, tokenizer = load_run(run)
    segment_len = args.segment_len or config.segment_len
    if segment_len < 1:
        raise UserError(f"--segment-len must be at least 1 (got {segment_len})")
    corpus = load_corpus(args.data or config.data, tokenizer_from_dict(tokenizer))
    result = evaluate(model, corpus.tokens[args.split], corpus.bytes_per_token(args.split),
                      segment_len, config.window, args.max_tokens,
                      config.eval_streams)
    result["unigram_bits_per_byte"] = corpus.unigram_bits_per_byte(args.split)
    print(json.dumps(result, indent=2))
    write_atomic(run / f"eval_{args.split}.json", result)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from fwp.lm.generate import check_sampling, generate
    from fwp.lm.tokenizer import tokenizer_from_dict
    from fwp.lm.train import load_run

    check_sampling(args.temperature, args.top_k, args.top_p)
    if args.tokens < 0 or args.samples < 1:
        raise UserError("--tokens must be ≥ 0 and --samples ≥ 1")
    _, model, saved = load_run(Path(args.run))
    tokenizer = tokenizer_from_dict(saved)
    ids = tokenizer.encode(args.prompt)
    if len(ids) == 0:
        raise UserError("--prompt is empty: give the text the sample should continue")
    prompt = torch.as_tensor(ids.astype("int64"))[None].repeat(args.samples, 1)
    out, _ = generate(model, prompt, args.tokens, args.temperature, args.top_k, args.top_p,
                      torch.Generator().manual_seed(args.seed))
    for i, row in enumerate(out.tolist()):
        if args.samples > 1:
            print(f"--- sample {i + 1}")
        sys.stdout.write(tokenizer.decode(row) + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from fwp.lm.hf import from_run
    except ImportError:
        raise UserError("fwp lm export needs transformers: pip install -e '.[hf]'") from None
    from_run(Path(args.run)).save_pretrained(args.to)
    print(f"wrote {args.to}; load it with `import fwp.lm.hf` and "
          f"AutoModelForCausalLM.from_pretrained({args.to!r})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fwp.config import parse_value
    from fwp.lm.sweep import read_grid, sweep

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {args.jobs})")
    grid = read_grid(args.grid)
    for text in args.set:
        key, sep, value = text.partition("=")
        if not sep:
            raise UserError(f"--set needs FIELD=VALUE, got {text!r}")
        grid.setdefault("set", {})[key] = parse_value(value)
    if args.seeds is not None:
        grid["seeds"] = args.seeds
    if args.parameters is not None:
        grid["parameters"] = args.parameters
    print(sweep(Path(args.dir), grid, args.jobs))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fwp.lm.report import write_report

    print(write_report(Path(args.dir)))
    return 0
