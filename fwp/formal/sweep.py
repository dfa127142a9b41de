"""A models × languages × seeds grid of runs with a small search on validation, resumable.

Layout: ``DIR/sweep.json`` (grid, search, seeds, base config, chosen configs, wall time),
``DIR/data/`` (the fixed data sets, built once per language), ``DIR/runs/<language>/<model>/
<lr…-l…>/s<seed>/`` (one run folder, see :mod:`fwp.formal.train`), ``DIR/report.md`` and
``DIR/heatmap.png``.

Two phases. Search: every (learning rate, layers) pair of the grid is trained with the first
seed. Each (language, model) cell then keeps the pair with the best validation accuracy of its
selected model (ties: lower validation loss; the search never reads a test bin), and the other
seeds train that pair; with one pair there is nothing to choose and every seed's runs start
at once. A run with ``metrics.json`` is skipped on re-run, an unfinished one resumes from its
checkpoint, so the same command continues a sweep that was stopped.

A sweep's cells come from flags (``--languages``, ``--models``, …) or from a grid file
(``--grid NAME`` of ``fwp/formal/grids/`` or a path; :func:`read_grid`): its ``languages``,
``models``, ``seeds``, ``search_lr``, ``search_layers``, ``reference`` (a model the report
compares the others with, paired by seed, Holm over the report) and ``[set]`` (run config fields
by leaf name), and optionally ``[parts.NAME]`` tables, each an ordinary sweep in ``DIR/NAME``
with its own ``languages`` and ``set`` over the shared ones (for tasks whose bins differ), all
trained in one pool of workers; the parts' reports are joined in ``DIR/report.md``.

A model entry is a registered layer name, or ``LABEL=LAYER:KEY=VALUE,…`` for a layer with
options (VALUE read as JSON where it parses, else as text), e.g.
``deltanet_neg=deltanet:allow_negative_eigenvalues=true,feature_map=l2``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from fwp.config import nest, parse_value, read_file, to_dict, write_atomic
from fwp.errors import UserError
from fwp.formal.config import RunConfig, from_dict
from fwp.formal.languages import get_language
from fwp.formal.report import DATA, RUNS, SWEEP, write_report
from fwp.formal.train import METRICS, config_changes, train
from fwp.runs import RunFolder
from fwp.runs.policy import learning_differences
from fwp.runs.sweep import check_name, grid_path, run_all

GRIDS = Path(__file__).parent / "grids"
GRID_KEYS = {"languages", "models", "seeds", "search_lr", "search_layers", "reference", "set",
             "parts"}
PART_KEYS = {"languages", "set"}


@dataclass
class Part:
    """One sweep of a grid: its folder below DIR ("" for DIR itself), cells and config layers."""

    name: str
    languages: list[str]
    models: list[str]
    seeds: list[int] | None
    search_lr: list[float] | None
    search_layers: list[int] | None
    layers: list[tuple[str, dict]]  # (where, nested partial run config), applied in order
    reference: str | None = None  # the model label the report compares the others with


def read_grid(grid: str) -> dict:
    """The grid file ``grid`` (a path or a name in ``fwp/formal/grids/``), its tables checked."""
    path = grid_path(grid, GRIDS)
    data = read_file(path)
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown}; a formal grid has "
                        f"{sorted(GRID_KEYS)}")
    return data


def grid_parts(grid: dict) -> list[Part]:
    """The sweeps a grid asks for (one, or one per ``[parts.NAME]``), checked before any work."""
    for table in [grid.get("set", {}), *(p.get("set", {}) for p in grid.get("parts", {}).values())]:
        named = sorted({"language", "model"} & set(table))
        if named:
            raise UserError(f"grid: {named[0]!r} in a set table; a grid names its cells with "
                            f"languages = [...] and models = [...]")
    shared = [("grid [set]", nest(RunConfig, grid.get("set", {}), "grid [set]"))]
    common = dict(models=list(grid.get("models", [])), seeds=grid.get("seeds"),
                  search_lr=grid.get("search_lr"), search_layers=grid.get("search_layers"),
                  reference=grid.get("reference"))
    parts = grid.get("parts", {})
    if not parts:
        return [Part("", list(grid.get("languages", [])), layers=shared, **common)]
    if "languages" in grid:
        raise UserError("grid: languages go in each [parts.NAME] when the grid has parts")
    out = []
    for name, part in parts.items():
        unknown = sorted(set(part) - PART_KEYS)
        if unknown:
            raise UserError(f"grid: [parts.{name}] takes languages and set, not {unknown}")
        where = f"grid [parts.{name}.set]"
        out.append(Part(check_name(name, "part name"), list(part.get("languages", [])),
                        layers=[*shared, (where, nest(RunConfig, part.get("set", {}), where))],
                        **common))
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A sweep row: its label, the registered layer and the layer's options."""

    label: str
    layer: str
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        label, _, rest = text.partition("=") if "=" in text.split(":")[0] else ("", "", text)
        layer, _, opts = rest.partition(":")
        options = {}
        for item in filter(None, opts.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise UserError(
                    f"bad model entry {text!r}: write LAYER or LABEL=LAYER:KEY=VALUE,…, e.g. "
                    f"deltanet_neg=deltanet:allow_negative_eigenvalues=true"
                )
            options[key] = parse_value(value)
        return cls(check_name(label or (text if options else layer), "model label"), layer,
                   options)


def run_name(lr: float, layers: int) -> str:
    return f"lr{lr:g}-l{layers}"


def run_dir(sweep_dir: Path, language: str, label: str, lr: float, layers: int,
            seed: int) -> Path:
    return Path(sweep_dir) / RUNS / language / label / run_name(lr, layers) / f"s{seed}"


def run_config(base: RunConfig, language: str, spec: ModelSpec, lr: float, layers: int,
               seed: int) -> RunConfig:
    config = copy.deepcopy(base)
    config.language = language
    config.network.model = spec.layer
    config.network.layer_options = {**base.network.layer_options, **spec.options}
    config.network.layers, config.lr, config.seed = layers, lr, seed
    return config


def _run(config_dict: dict, out: str, data_cache: str) -> tuple[str, str]:
    """Train one run (in this or a worker process); its log goes to ``out/train.log``.

    A run that fails with a :class:`UserError` (e.g. a NaN loss) is logged and left
    unfinished, so that the other runs still go and a re-run retries it.
    """
    config = from_dict(config_dict)
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "train.log", "a") as logfile:
        def log(message: str) -> None:
            logfile.write(message + "\n")
            logfile.flush()

        try:
            metrics = train(config, Path(out), log=log, data_cache=Path(data_cache))
        except UserError as error:
            log(f"failed: {error}")
            return out, f"failed: {error}"
    last_bin = list(metrics["bins"])[-1]
    last = metrics["bins"][last_bin]
    answers = f" (answers {last['answer_acc']:.1f}%)" if "answer_acc" in last else ""
    return out, (f"valid {metrics['valid']['seq_acc']:.1f}%, {last['seq_acc']:.1f}% on bin "
                 f"{last_bin}{answers}")


def valid_key(metrics: dict) -> tuple[float, float]:
    """Search order: higher validation sequence accuracy, then lower validation loss."""
    return (metrics["valid"]["seq_acc"], -metrics["valid"]["loss"])


def _rows_and_columns(languages: list[str], models: list[str]) -> tuple[list[str],
                                                                        list[ModelSpec]]:
    """The sweep's languages (canonical names) and models, each once; unknown ones refused."""
    from fwp.formal.model import available_models

    if not languages or not models:
        raise UserError("a sweep needs at least one --languages and one --models entry")
    languages = list(dict.fromkeys(get_language(name).name for name in languages))
    by_label: dict[str, ModelSpec] = {}
    for spec in map(ModelSpec.parse, models):
        first = by_label.setdefault(spec.label, spec)
        if (first.layer, first.options) != (spec.layer, spec.options):
            raise UserError(f"--models names {spec.label!r} twice, as two different models; "
                            "give each its own LABEL=LAYER:KEY=VALUE,…")
    specs = list(by_label.values())
    registered = available_models()
    unknown = [s.layer for s in specs if s.layer not in registered]
    if unknown:
        raise UserError(
            f"unknown model(s) {', '.join(unknown)}; registered layers: "
            f"{', '.join(registered) or 'none (fwp.layers missing)'}"
        )
    return languages, specs


@dataclass
class Plan:
    """A sweep checked against its folder, ready to run (:func:`check_sweep`)."""

    base: RunConfig
    out: Path
    languages: list[str]
    specs: list[ModelSpec]
    seeds: list[int]
    grid: list[tuple[float, int]]  # (learning rate, layers) pairs searched with the first seed
    base_dict: dict
    reference: str | None = None


def check_sweep(base: RunConfig, languages: list[str], models: list[str], out: Path,
                seeds: list[int] | None = None, search_lr: list[float] | None = None,
                search_layers: list[int] | None = None, reference: str | None = None) -> Plan:
    """Every cell's config validated and the folder checked against it, before any work: a
    folder that holds a sweep or runs of another config is refused; ``reference`` (the model
    the report compares the others with) must be one of the models."""
    out = Path(out)
    languages, specs = _rows_and_columns(languages, models)
    labels = [spec.label for spec in specs]
    if reference is not None and reference not in labels:
        raise UserError(f"reference model {reference!r} is not one of the sweep's models "
                        f"({', '.join(labels)}); name one of them")
    seeds = list(dict.fromkeys(seeds or [base.seed]))
    grid = list(itertools.product(dict.fromkeys(search_lr or [base.lr]),
                                  dict.fromkeys(search_layers or [base.network.layers])))
    for lang, spec in itertools.product(languages, specs):
        run_config(base, lang, spec, *grid[0], seeds[0]).validate()
    info_path = out / SWEEP
    info = read_file(info_path) if info_path.exists() else {}
    base_dict = to_dict(base)
    del base_dict["language"], base_dict["network"]["model"], base_dict["seed"], base_dict["lr"]
    del base_dict["network"]["layers"], base_dict["threads"]  # threads: see each run's metrics
    if learning_differences(RunConfig, info.get("base", base_dict), base_dict):
        raise UserError(
            f"{out} already holds a sweep with another base config; repeat the original flags "
            f"(or grid), or sweep into a new folder"
        )
    conflicts = [
        f"{lang} × {spec.label}"
        for lang in languages for spec in specs for lr, layers in grid
        if config_changes(run_config(base, lang, spec, lr, layers, seeds[0]),
                          run_dir(out, lang, spec.label, lr, layers, seeds[0]))
    ]
    if conflicts:
        raise UserError(
            f"{out} already has runs with another config ({len(conflicts)} runs, e.g. "
            f"{conflicts[0]}); repeat the original flags (or grid), or sweep into a new folder"
        )
    return Plan(base, out, languages, specs, seeds, grid, base_dict, reference)


def sweep(base: RunConfig, languages: list[str], models: list[str], out: Path,
          jobs: int = 1, progress: bool = True, seeds: list[int] | None = None,
          search_lr: list[float] | None = None,
          search_layers: list[int] | None = None, reference: str | None = None) -> str:
    """Run every search and seed run not finished yet, then write the report; returns it."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    plan = check_sweep(base, languages, models, out, seeds, search_lr, search_layers, reference)
    return run_plans([plan], jobs, progress)[0]


def run_plans(plans: list[Plan], jobs: int = 1, progress: bool = True) -> list[str]:
    """Train the checked sweeps' runs not finished yet, all in one pool of ``jobs`` workers
    (the parts of a grid: no core waits at the end of one part while the next could start),
    then write each sweep's report; returns the reports.

    The searches of every plan with more than one (lr, layers) pair run first; then, with the
    choices made, the other seeds, together with the runs of the plans that have nothing to
    choose."""
    with contextlib.ExitStack() as locks:
        for plan in plans:
            locks.enter_context(RunFolder(plan.out).locked("sweep"))
            _write_info(plan)
        total = sum(len(p.languages) * len(p.specs) * (len(p.grid) + len(p.seeds) - 1)
                    for p in plans)
        root = Path(os.path.commonpath([p.out for p in plans]))
        bar = tqdm(total=total, desc=f"sweep {root.name}", unit="run", disable=not progress,
                   dynamic_ncols=True)
        start = time.perf_counter()
        try:
            searched = [p for p in plans if len(p.grid) > 1]
            if searched:
                _run_all([_search_runs(p) for p in searched], searched, jobs, bar, root)
            _run_all([(_search_runs(p) if len(p.grid) == 1 else []) + _seed_runs(p, _choose(p))
                      for p in plans], plans, jobs, bar, root)
        finally:
            bar.close()
            for plan in plans:
                info = read_file(plan.out / SWEEP)
                info["wall_seconds"] = (info.get("wall_seconds", 0.0)
                                        + time.perf_counter() - start)
                if len(plans) > 1:  # one pool: the time is the whole grid's
                    info["wall_shared_by"] = [p.out.name for p in plans]
                write_atomic(plan.out / SWEEP, info)
        return [write_report(plan.out)[1] for plan in plans]


def _write_info(plan: Plan) -> None:
    """``sweep.json``: the cells, seeds, search and base config (merged with an earlier call's)."""
    path = plan.out / SWEEP
    info = read_file(path) if path.exists() else {}
    info["languages"] = list(dict.fromkeys(info.get("languages", []) + plan.languages))
    info["models"] = {**info.get("models", {}),
                      **{s.label: {"layer": s.layer, "options": s.options} for s in plan.specs}}
    info["seeds"], info["search"] = plan.seeds, {"lr": [g[0] for g in plan.grid],
                                                 "layers": [g[1] for g in plan.grid]}
    info["base"] = plan.base_dict
    if plan.reference is not None:
        info["reference"] = plan.reference
    write_atomic(path, info)


def _search_runs(plan: Plan) -> list[tuple]:
    """Every (lr, layers) pair of every cell, with the first seed."""
    return [(lang, spec, lr, layers, plan.seeds[0])
            for lang in plan.languages for spec in plan.specs for lr, layers in plan.grid]


def _choose(plan: Plan) -> dict[str, dict]:
    """Per cell the pair its finished search runs rank first (the only pair, when the grid has
    one: nothing to wait for), recorded in ``sweep.json``."""
    chosen = {}
    for lang, spec in itertools.product(plan.languages, plan.specs):
        if len(plan.grid) == 1:
            chosen[f"{lang}/{spec.label}"] = {"lr": plan.grid[0][0], "layers": plan.grid[0][1]}
            continue
        done = [(valid_key(m), lr, layers) for lr, layers in plan.grid
                if (m := _metrics(run_dir(plan.out, lang, spec.label, lr, layers,
                                          plan.seeds[0])))]
        if done:
            _, lr, layers = max(done, key=lambda d: d[0])
            chosen[f"{lang}/{spec.label}"] = {"lr": lr, "layers": layers}
    info = read_file(plan.out / SWEEP)
    info["chosen"] = {**info.get("chosen", {}), **chosen}
    write_atomic(plan.out / SWEEP, info)
    return chosen


def _seed_runs(plan: Plan, chosen: dict[str, dict]) -> list[tuple]:
    """The seeds after the first, with each cell's chosen pair, seed by seed."""
    return [(lang, spec, c["lr"], c["layers"], seed)
            for seed in plan.seeds[1:] for lang in plan.languages for spec in plan.specs
            if (c := chosen.get(f"{lang}/{spec.label}"))]


def _metrics(run: Path) -> dict | None:
    path = run / METRICS
    return json.loads(path.read_text()) if path.exists() else None


def _run_all(runs: list[list[tuple]], plans: list[Plan], jobs: int, bar: tqdm,
             root: Path) -> None:
    """The unfinished runs of each plan (``runs[i]`` of ``plans[i]``) in one pool."""
    todo = []
    for plan, plan_runs in zip(plans, runs):
        for lang, spec, lr, layers, seed in plan_runs:
            folder = run_dir(plan.out, lang, spec.label, lr, layers, seed)
            if (folder / METRICS).exists():
                bar.update(1)
                continue
            config = run_config(plan.base, lang, spec, lr, layers, seed)
            if jobs > 1:
                config.threads = config.threads or 1  # one torch thread per worker by default
            todo.append((to_dict(config), str(folder), str(plan.out / DATA)))

    def started(tasks: list) -> None:
        if jobs == 1:
            bar.set_postfix_str(_shown(Path(tasks[0][1]), root))

    # In workers, the data sets of one language are built by whichever run needs them first
    # and read back from the plan's DIR/data by the others.
    run_all(todo, _run_task, jobs, lambda result: _report_done(bar, root, result), started)


def _shown(folder: Path, root: Path) -> str:
    """``PART/LANGUAGE/MODEL/…/sSEED`` below the sweep folder (``runs/`` left out)."""
    return "/".join(part for part in folder.relative_to(root).parts if part != RUNS)


def _run_task(args: tuple[dict, str, str]) -> tuple[str, str]:
    return _run(*args)


def _report_done(bar: tqdm, root: Path, result: tuple[str, str]) -> None:
    folder, outcome = result
    bar.update(1)
    bar.write(f"{_shown(Path(folder), root)}: {outcome}")
