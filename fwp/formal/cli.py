"""``fwp formal {languages,train,eval,sweep,report}``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fwp.errors import UserError
from fwp.formal.config import add_config_flags, config_from_args
from fwp.formal.data import Bin
from fwp.formal.languages import END, SEQUENCE_TASKS
from fwp.formal.sweep import GRIDS
from fwp.layers import LAYERS
from fwp.runs.folder import check_output_path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the formal-language commands to ``fwp formal``: ``add_<command>`` adds one command's
    parser, ``cmd_<command>`` runs it."""
    for add in (add_languages, add_train, add_eval, add_sweep, add_report):
        add(subparsers)


def add_languages(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("languages", help="list the languages and tasks and their targets")
    p.set_defaults(func=cmd_languages)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train one model on one language",
        description="Train --model (a registered layer name) on --language; every field of the "
                    "run config is a flag. Re-running the same command resumes.")
    add_config_flags(p)
    p.add_argument("--out", metavar="RUN", default=None,
                   help="run folder (default: runs/formal/LANGUAGE-MODEL-sSEED)")
    p.set_defaults(func=cmd_train)


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="test a trained run on length bins")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp formal train")
    p.add_argument("--bins", nargs="+", default=None,
                   help="length bins LO-HI (default: the run's own bins)")
    p.add_argument("--eval-size", type=int, default=None, help="strings per bin")
    p.set_defaults(func=cmd_eval)


def add_sweep(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="models × languages grid, resumable, then the report",
        description="Train every model × language cell of --grid (a file of fwp/formal/grids/ "
                    "or a path) or of --languages × --models: first each --search-lr × "
                    "--search-layers pair with the first of --seeds, then the other seeds with "
                    "the pair of best validation accuracy, into DIR/runs/LANGUAGE/MODEL/"
                    "lrLR-lLAYERS/sSEED (finished runs are skipped on re-run, so the same "
                    "command resumes), then write DIR/report.md and DIR/heatmap.png. A model is "
                    "a layer name or LABEL=LAYER:KEY=VALUE,… Other flags set every run's config "
                    "(over the grid's [set]).")
    p.add_argument("dir", metavar="DIR", help="sweep folder")
    p.add_argument("--grid", metavar="NAME|FILE.toml", default=None,
                   help=f"grid file: a path, or one of "
                   f"{', '.join(sorted(f.stem for f in GRIDS.glob('*.toml')))}")
    p.add_argument("--languages", nargs="+", default=None,
                   help=f"languages or tasks, of: {', '.join(SEQUENCE_TASKS)} (tasks also as "
                   f"NAME:KEY=VALUE,…)")
    p.add_argument("--models", nargs="+", default=None,
                   help=f"registered layer names (or LABEL=LAYER:KEY=VALUE,…), of: "
                   f"{', '.join(LAYERS)}")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds per cell (default: the grid's, else --seed); the first one runs "
                   "the search")
    p.add_argument("--search-lr", type=float, nargs="+", default=None,
                   help="learning rates searched per cell on validation (default: the grid's, "
                   "else --lr)")
    p.add_argument("--search-layers", type=int, nargs="+", default=None,
                   help="layer counts searched per cell on validation (default: the grid's, "
                   "else --layers)")
    p.add_argument("--reference", metavar="MODEL", default=None,
                   help="a model (label) the report compares every other model with, paired "
                   "by seed, Holm over the report (default: the grid's, else none)")
    add_config_flags(p, skip=("language", "model"))
    p.set_defaults(func=cmd_sweep)


def add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="(re)write a sweep's table and heat map")
    p.add_argument("dir", metavar="DIR", help="sweep folder")
    p.add_argument("--reference", metavar="MODEL", default=None,
                   help="compare every other model with this one (default: the sweep's own "
                   "reference, set by its grid or --reference; else no comparisons)")
    p.set_defaults(func=cmd_report)



def cmd_languages(args: argparse.Namespace) -> int:
    import numpy as np

    rng = np.random.default_rng(0)
    print(f"Languages, per position: the set of valid next characters ({END} = end of string).")
    print("Tasks: the answer at each scored position (_ = no output); a bin counts the size "
          "named.\n")
    for lang in SEQUENCE_TASKS.values():
        example = lang.sample(lang.example_size(), rng)
        if lang.exclusive:
            answers = " ".join(a or "·" for a in lang.answers(example))
            print(f"{lang.name:11s} {lang.description} (bins count {lang.bin_unit})")
            print(f"{'':11s} e.g. {example}  →  {answers}")
            continue
        sets = " ".join("{" + "".join(sorted(s)) + "}" for s in lang.next_sets(example))
        print(f"{lang.name:11s} {lang.description}")
        print(f"{'':11s} e.g. {example}  →  {sets}")
    return 0


def _print_bins(bins: dict) -> None:
    answers = all("answer_acc" in m for m in bins.values())
    print("| bin | sequence acc. (%) | position acc. (%) |"
          + (" answer acc. (%) |" if answers else "") + " loss |")
    print("|---|---:|---:|" + ("---:|" if answers else "") + "---:|")
    for name, m in bins.items():
        answer = f" {m['answer_acc']:.2f} |" if answers else ""
        print(f"| {name} | {m['seq_acc']:.1f} | {m['pos_acc']:.2f} |{answer} {m['loss']:.4f} |")


def cmd_train(args: argparse.Namespace) -> int:
    from fwp.formal.train import train

    config = config_from_args(args)
    out = Path(args.out or f"runs/formal/{config.language}-{config.network.model}-s{config.seed}")
    check_output_path(out)
    metrics = train(config, out)
    print(f"{out}: {metrics['steps_run']} steps in {metrics['train_seconds']:.0f} s")
    _print_bins(metrics["bins"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fwp.config import write_atomic
    from fwp.formal.train import evaluate_bins, load_model

    check_output_path(Path(args.run), "the run folder")  # eval.json goes there
    config, model = load_model(Path(args.run))
    if args.eval_size is not None:
        if args.eval_size < 1:
            raise UserError(f"--eval-size must be at least 1 (got {args.eval_size})")
        config.eval_size = args.eval_size
    bins = [str(Bin.parse(b)) for b in (args.bins or config.bins)]
    result = evaluate_bins(model, config, bins)
    write_atomic(Path(args.run) / "eval.json", {"eval_size": config.eval_size, "bins": result})
    _print_bins(result)
    return 0


def _sweep_parts(args: argparse.Namespace) -> list:
    """The sweeps the command asks for: the grid's parts, or one of --languages × --models, with
    --seeds and --search-* over the grid's."""
    from fwp.formal.sweep import Part, grid_parts, read_grid

    if args.grid is None:
        missing = [f"--{name}" for name in ("languages", "models") if not getattr(args, name)]
        if missing:
            raise UserError(f"fwp formal sweep needs --grid, or --languages and --models "
                            f"(missing {' and '.join(missing)})")
        return [Part("", args.languages, args.models, args.seeds, args.search_lr,
                     args.search_layers, [], args.reference)]
    given = [f"--{name}" for name in ("languages", "models") if getattr(args, name)]
    if given:
        raise UserError(f"{given[0]} with --grid: the grid names the languages and models; drop "
                        f"{given[0]}, or edit a copy of the grid file and pass its path")
    parts = grid_parts(read_grid(args.grid))
    for part in parts:
        part.seeds = args.seeds or part.seeds
        part.search_lr = args.search_lr or part.search_lr
        part.search_layers = args.search_layers or part.search_layers
        part.reference = args.reference or part.reference
    return parts


def cmd_sweep(args: argparse.Namespace) -> int:
    import signal

    from fwp.config import write_atomic
    from fwp.formal.report import PARTS, write_report
    from fwp.formal.sweep import ModelSpec, check_sweep, run_plans

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    out = Path(args.dir)
    check_output_path(out)
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {args.jobs})")
    plans = []
    parts = _sweep_parts(args)
    has_parts = parts[0].name != ""
    if has_parts and (out / "runs").is_dir() or not has_parts and (out / PARTS).is_file():
        held, asked = ("a sweep without parts", "a grid with parts") if has_parts else (
            "a grid's parts", "a sweep without parts")
        raise UserError(f"{out} holds {held}; {asked} goes into a new folder")
    for part in parts:  # every part checked before any work
        if not part.languages or not part.models:
            raise UserError(f"a sweep needs at least one language and one model"
                            f"{f' (grid part {part.name!r})' if part.name else ''}")
        base = config_from_args(args, layers=part.layers, language=part.languages[0],
                                model=ModelSpec.parse(part.models[0]).layer)
        plans.append(check_sweep(base, part.languages, part.models, out / part.name,
                                 part.seeds, part.search_lr, part.search_layers,
                                 part.reference))
    # A sweep stopped by SIGTERM or SIGINT (also when started in the background, where SIGINT
    # is ignored by default) still adds its wall time to sweep.json; every run resumes.
    # The handlers are put back afterwards, so a caller in the same process (a test, a notebook)
    # keeps its own Ctrl-C behaviour.
    if len(plans) > 1 or plans[0].out != out:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / PARTS, [plan.out.name for plan in plans])
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        text = run_plans(plans, jobs=args.jobs)[-1]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if (out / PARTS).is_file():
        _, text = write_report(out)
    print(text)
    print(f"report: {out / 'report.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fwp.formal.report import write_report

    check_output_path(Path(args.dir), "DIR")
    md_path, text = write_report(Path(args.dir), args.reference)
    print(text)
    print(f"report: {md_path}")
    return 0
