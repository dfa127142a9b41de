"""``fwp series {data,train,eval,sweep,report}``: time-series classification, regular or
irregular, with continuous-time FWPs and their baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from fwp.errors import UserError
from fwp.series.config import add_config_flags, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the series commands to ``fwp series``."""
    p = subparsers.add_parser("data", help="describe a prepared data set (sizes, classes, "
                              "observed points)")
    add_config_flags(p)
    p.set_defaults(func=cmd_data)

    p = subparsers.add_parser(
        "train", help="train one model on one data set",
        description="Train --model on --dataset with --drop of the points missing; every field "
                    "of the run config is a flag. Re-running the same command resumes.")
    add_config_flags(p)
    p.add_argument("--out", metavar="RUN", default=None,
                   help="run folder (default: runs/series/DATASET-MODEL-dropP-sSEED)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="test a trained run's selected model again")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp series train")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "sweep", help="a grid of configs × seeds, resumable, then the report",
        description="Train every run of --grid (a TOML file, or a name in fwp/series/grids) "
                    "with --set/--vary/--seeds over it, into DIR/runs/…/seedK; the same "
                    "command resumes. Then write DIR/report.md.")
    p.add_argument("out", metavar="DIR", help="sweep folder")
    p.add_argument("--grid", default=None, help="grid file or name (e.g. continuous)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of every run (repeatable)")
    p.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of a field to combine (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of every config")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("report", help="(re)write a sweep's report.md")
    p.add_argument("out", metavar="DIR", help="sweep folder")
    p.set_defaults(func=cmd_report)


def cmd_data(args: argparse.Namespace) -> int:
    from fwp.series.train import prepared_data

    config = config_from_args(args)
    data = prepared_data(config)
    N, T, C = data.values.shape
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    print(f"{config.dataset}: {N} series ({sizes}), {T} time points, {C - 1} channels + time, "
          f"{len(data.classes)} classes, lengths {int(data.lengths.min())}–"
          f"{int(data.lengths.max())}, {100 * data.observed.float().mean():.1f} % of points "
          f"observed (drop {config.drop:g})")
    return 0


def _print(metrics: dict) -> None:
    for split in ("valid", "test"):
        m = metrics[split]
        extra = f", AUROC {m['auroc']:.3f}" if "auroc" in m else ""
        print(f"{split}: accuracy {m['accuracy']:.1f}%, loss {m['loss']:.4f}{extra}")


def cmd_train(args: argparse.Namespace) -> int:
    from fwp.series.train import train

    config = config_from_args(args)
    out = Path(args.out or f"runs/series/{config.dataset}-{config.model}-drop{config.drop:g}"
                           f"-s{config.seed}")
    metrics = train(config, out)
    print(f"{out}: {metrics['parameters']} parameters, {metrics['train_seconds']:.0f} s")
    _print(metrics)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fwp.config import write_atomic
    from fwp.runs import RunFolder, load_checkpoint
    from fwp.series.config import from_dict
    from fwp.series.train import build_model, evaluate, prepared_data

    run = RunFolder(Path(args.run))
    if not run.best.exists():
        raise UserError(f"no best.pt in {args.run}; train it first with fwp series train")
    config = from_dict(run.read_config(), str(run.config_path))
    data = prepared_data(config)
    model = build_model(config, data)
    model.load_state_dict(load_checkpoint(run.best)["model"])
    result = evaluate(model, data, args.split)
    write_atomic(Path(args.run) / f"eval_{args.split}.json", result)
    extra = f", AUROC {result['auroc']:.3f}" if "auroc" in result else ""
    print(f"{args.split}: accuracy {result['accuracy']:.1f}%, loss {result['loss']:.4f}{extra}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fwp.series.sweep import apply_overrides, read_grid, sweep

    grid = apply_overrides(read_grid(args.grid), args.set, args.vary, args.seeds)
    print(sweep(Path(args.out), grid, jobs=args.jobs))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fwp.series.report import write_report

    print(write_report(Path(args.out)))
    return 0
