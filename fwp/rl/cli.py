"""``fwp rl {train,eval,report,study,rtrl}``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fwp.errors import UserError
from fwp.rl.config import add_config_flags, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    for add in (add_train, add_eval, add_report, add_sweep, add_rtrl):
        add(subparsers)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train an actor-critic with an FWP (or any registered layer) core",
        description="Recurrent PPO (or --algo r2ac) on --env; every field of the run config "
                    "is a flag. Re-running the same command resumes from the checkpoint.")
    add_config_flags(p)
    p.add_argument("--out", metavar="RUN", default=None,
                   help="run folder (default: runs/rl/ENV-MODEL-sSEED)")
    p.set_defaults(func=cmd_train)


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="seeded evaluation episodes of a trained run")
    p.add_argument("run", metavar="RUN", help="run folder written by fwp rl train")
    p.add_argument("--episodes", type=int, default=32, help="episodes (default: 32)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="episode i plays environment seed SEED + i (default: 10000)")
    p.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    p.set_defaults(func=cmd_eval)


def add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="returns against frames over seeds: table, paired differences against "
        "the references, plot",
        description="Report on a sweep folder (its runs, into the folder, as fwp rl sweep does) "
                    "or on run folders (into --out).")
    p.add_argument("runs", nargs="+", metavar="DIR|RUN",
                   help="a sweep folder, or run folders")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for report.md and returns.png (default: the sweep folder)")
    p.set_defaults(func=cmd_report)


def add_sweep(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="a grid of runs × seeds (resumable), then the report",
        description="Train every run × seed of --grid (a TOML file, or a name in fwp/rl/grids/: "
                    "pomdp, memory, multitask, r2ac, study, tiny) into DIR/runs/NAME/seedK, then "
                    "write DIR/report.md (with paired differences, Holm-adjusted); the same "
                    "command resumes a stopped sweep.")
    p.add_argument("dir", metavar="DIR", help="sweep folder")
    p.add_argument("--grid", required=True, help="grid file or name")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    p.set_defaults(func=cmd_sweep)


def add_rtrl(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rtrl", help="online delayed recall, RTRL vs truncated BPTT; memory and time per step",
        description="Train --cells online on delayed recall (--delay longer than --segment) "
                    "with RTRL and with truncated BPTT, and measure memory and time per step "
                    "of full BPTT and RTRL as the sequence grows; writes OUT/rtrl.json, "
                    "OUT/rtrl.md and OUT/recall.png. Resumes: learners already measured with "
                    "the same settings are kept.")
    p.add_argument("--out", metavar="DIR", required=True)
    p.add_argument("--cells", nargs="+", default=["elstm", "fwp_sum"])
    p.add_argument("--delay", type=int, default=20)
    p.add_argument("--segment", type=int, default=10, help="steps per update (truncation)")
    p.add_argument("--steps", type=int, default=20_000, help="stream steps per learner")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 400, 1600],
                   help="sequence lengths of the memory/time measurement")
    p.add_argument("--compute", choices=["cpu", "steps"], default="cpu",
                   help="cpu: truncated BPTT runs for the CPU time RTRL took on the same cell and "
                        "seed (the same compute); steps: both run --steps")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_rtrl)


def cmd_train(args: argparse.Namespace) -> int:
    from fwp.rl.train import train

    config = config_from_args(args)
    label = config.network.model if config.algo == "ppo" else (
        f"r2ac-{config.network.cell}-{config.network.gradient}")
    out = Path(args.out or f"runs/rl/{config.env.replace('/', '_')}-{label}-s{config.seed}")
    train(config, out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fwp.config import write_atomic
    from fwp.rl.evaluate import run_episodes
    from fwp.rl.train import load_policy

    if args.episodes < 1:
        raise UserError(f"--episodes must be at least 1 (got {args.episodes})")
    _, spec, policy = load_policy(Path(args.run))
    result = run_episodes(policy, spec, args.episodes, args.seed, greedy=args.greedy)
    write_atomic(Path(args.run) / f"eval_seed{args.seed}.json", result)
    print(json.dumps({k: result[k] for k in ("episodes", "seed", "mean_return", "per_task")}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fwp.rl.report import write_report

    paths = [Path(r) for r in args.runs]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise UserError(f"no such folder: {missing[0]}")
    sweep = len(paths) == 1 and (paths[0] / "runs").is_dir()
    if sweep:
        out = Path(args.out) if args.out else paths[0]
        paths = sorted(p.parent for p in paths[0].glob("runs/*/seed*/config.json"))
    elif args.out is None:
        raise UserError("run folders need --out DIR for the report (or give one sweep folder)")
    else:
        out = Path(args.out)
    not_runs = [str(p) for p in paths if not (p / "config.json").is_file()]
    if not_runs or not paths:
        raise UserError(f"{not_runs[0] if not_runs else args.runs[0]} holds no fwp rl run "
                        f"(no config.json); give run folders or a sweep folder")
    print(write_report(paths, out))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fwp.rl.sweep import sweep

    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {args.jobs})")
    print(sweep(args.grid, Path(args.dir), jobs=args.jobs))
    return 0


def cmd_rtrl(args: argparse.Namespace) -> int:
    import torch

    from fwp.config import read_file, write_atomic
    from fwp.rl.recall import RecallTask, cost_per_step, online_recall, recall_report

    if args.delay < args.segment:
        raise UserError(f"--delay {args.delay} is shorter than --segment {args.segment}: the "
                        f"comparison needs a delay no truncated gradient spans")
    if args.steps < args.segment:
        raise UserError(f"--steps {args.steps} is shorter than --segment {args.segment}: give "
                        f"at least one segment")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"delay": args.delay, "segment": args.segment, "steps": args.steps,
                "compute": args.compute, "log_every": 1000}
    results = {"settings": settings, "recall": [], "cost": []}
    if (out / "rtrl.json").is_file():  # resume: keep what was measured with these settings
        old = read_file(out / "rtrl.json")
        if old.get("settings") == settings:
            results = old
            print(f"{out / 'rtrl.json'}: resuming ({len(old['recall'])} learners measured)")
        else:
            print(f"{out / 'rtrl.json'}: measured with other settings ({old.get('settings')}); "
                  f"measuring again")
    task = RecallTask(delay=args.delay)
    measured = {(r["cell"], r["gradient"], r["seed"]): r for r in results["recall"]}
    for cell in args.cells:
        if not any(c["cell"] == cell for c in results["cost"]):
            results["cost"] += cost_per_step(cell, args.lengths)
            write_atomic(out / "rtrl.json", results)
        for seed in args.seeds:
            for gradient in ("rtrl", "tbptt"):
                if (cell, gradient, seed) in measured:
                    continue
                budget = None
                if gradient == "tbptt" and args.compute == "cpu":
                    budget = measured[(cell, "rtrl", seed)]["cpu_seconds"]
                r = online_recall(cell, gradient, task, args.steps, args.segment, seed=seed,
                                  cpu_seconds=budget, log_every=settings["log_every"])
                print(f"{cell} {gradient} seed {seed}: {r['steps']:,} steps in "
                      f"{r['cpu_seconds']:.1f} CPU s, final recall accuracy "
                      f"{r['final_accuracy']:.3f}", flush=True)
                results["recall"].append(r)
                measured[(cell, gradient, seed)] = r
                write_atomic(out / "rtrl.json", results)
    print(recall_report(results, out))
    return 0
