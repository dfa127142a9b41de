"""The grid of ``fwp fewshot sweep``: named configs × seeds, evaluated at K_test on fixed test
episodes; its TOML file and its JSON record ``DIR/grid.json``.

A grid is a list of named configs (each a preset plus field overrides, all of them with the
grid's shared overrides, times every combination of the ``vary`` values) and a list of seeds.
Grid file (TOML)::

    seeds = [1, 2, 3]
    k_test = [1, 5, 10, 15]
    test_episodes = 1000
    compare = [["table2_k5+beta2=0", "k10_kp1+beta2=0"]]  # (off, on) pairs besides the β2 pairs
    interaction = [[["a_off", "a_on"], ["b_off", "b_on"]]]  # how (on − off) changes from a to b
    [set]                     # every config: field = value (flag names, - or _)
    steps = 800
    dataset = "cluttered_glyphs"
    [vary]                    # every config × every combination of these values
    beta2 = [0.0, 5.0]
    [[configs]]               # one per config: a preset, a name, more fields
    preset = "table2_k5"
    [[configs]]
    name = "k10_kp1"
    preset = "table1_k10_kp5"
    k_extra = 1

A grid file may start from another with ``base = "NAME"`` (a grid shipped in
``fwp/fewshot/sweeps/`` or a path): its ``set`` and ``vary`` entries are updated key by key, every
other key (``configs`` included) is replaced when given, and ``compare`` goes with the configs:
a file that gives configs and no ``compare`` has none; the same for ``interaction``.

``interaction``: pairs of pairs ``[[off_a, on_a], [off_b, on_b]]``; the report tests the
difference of differences (on_b − off_b) − (on_a − off_a), paired by seed: whether an effect
changes between two settings (e.g. bootstrap − plain at 1,200 and at 3,600 steps).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fwp import config as core
from fwp.config import leaves, read_file, to_dict
from fwp.errors import UserError
from fwp.fewshot.config import RunConfig, from_dict, preset
from fwp.runs.sweep import check_name, grid_path

GRIDS_DIR = Path(__file__).parent / "sweeps"
EVAL = "sweep_eval.json"
GRID = "grid.json"
GRID_KEYS = ("seeds", "k_test", "test_episodes", "split", "set", "vary", "configs", "compare",
             "interaction")
GRID_TYPES = {"seeds": list[int], "k_test": list[int], "test_episodes": int, "split": str,
              "set": dict, "vary": dict, "configs": list[dict], "compare": list[list[str]],
              "interaction": list[list[list[str]]]}
Pair = tuple[str, str]


def _paths() -> dict[str, tuple[str, ...]]:
    return {path[-1]: path for path, _, _ in leaves(RunConfig)}


def _nested(flat: dict[str, Any], where: str) -> dict:
    """``{"k_shot": 5, "steps": 10}`` → ``{"data": {"k_shot": 5}, "steps": 10}``."""
    paths, out = _paths(), {}
    for key, value in flat.items():
        name = key.replace("-", "_")
        if name not in paths:
            raise UserError(f"unknown field {key!r} in {where}; fields are the flags of "
                            "`fwp fewshot train` (e.g. steps, k_shot, beta2)")
        node = out
        for part in paths[name][:-1]:
            node = node.setdefault(part, {})
        node[paths[name][-1]] = value
    return out


def flat_config(config: RunConfig | dict) -> dict[str, Any]:
    """Leaf name → value of a config (the flag names, underscored)."""
    return core.flat(RunConfig, config)


def merge(data: dict, update: dict, where: str) -> None:
    """Write the partial run config ``update`` into ``data`` (see :func:`fwp.config.merge`)."""
    core.merge(data, update, where, RunConfig)


def _label(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value).lower()
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


@dataclass
class Grid:
    """Named configs (resolved, seed aside) × seeds, evaluated at ``k_test`` on
    ``test_episodes`` fixed episodes of ``split``."""

    configs: dict[str, RunConfig]
    seeds: list[int]
    k_test: list[int] = field(default_factory=lambda: [1, 5, 10, 15])
    test_episodes: int = 1000
    split: str = "test"
    compare: list[Pair] = field(default_factory=list)
    interaction: list[tuple[Pair, Pair]] = field(default_factory=list)

    def runs(self, root: Path) -> list[tuple[str, int, Path]]:
        """(config, seed, run folder), seed by seed: a sweep cut short has every config's
        first seeds, so the paired comparisons start early."""
        return [(name, seed, root / "runs" / name / f"seed{seed}")
                for seed in self.seeds for name in self.configs]

    def evaluated_elsewhere(self, root: Path) -> list[tuple[str, int, Path]]:
        """(config, seed, run folder) of the seed folders under ``root`` that this grid's seeds
        leave out (a config trained with more seeds than another, by an earlier call with other
        ``--seeds``): the report counts them too."""
        extra = []
        for name in self.configs:
            for run in sorted((root / "runs" / name).glob("seed*")):
                tail = run.name[len("seed"):]
                if tail.isdigit() and int(tail) not in self.seeds:
                    extra.append((name, int(tail), run))
        return sorted(extra, key=lambda r: (r[1], r[0]))

    def config(self, name: str, seed: int, threads: int) -> RunConfig:
        data = to_dict(self.configs[name])
        data["seed"], data["threads"] = seed, threads
        return from_dict(data)

    def restricted(self, names: list[str]) -> Grid:
        """The grid with only the configs ``names``."""
        unknown = [n for n in names if n not in self.configs]
        if unknown:
            raise UserError(f"--only {', '.join(unknown)}: no such config in the grid; its "
                            f"configs are {', '.join(self.configs)}")
        return Grid({n: c for n, c in self.configs.items() if n in names}, self.seeds,
                    self.k_test, self.test_episodes, self.split,
                    [(a, b) for a, b in self.compare if a in names and b in names],
                    [(a, b) for a, b in self.interaction if set(a + b) <= set(names)])

    def to_json(self) -> dict:
        return {"configs": {n: to_dict(c) for n, c in self.configs.items()},
                "seeds": self.seeds, "k_test": self.k_test,
                "test_episodes": self.test_episodes, "split": self.split,
                "compare": [list(pair) for pair in self.compare],
                "interaction": [[list(a), list(b)] for a, b in self.interaction]}

    @classmethod
    def from_json(cls, data: dict) -> Grid:
        return cls({check_name(n): from_dict(c) for n, c in data["configs"].items()},
                   list(data["seeds"]),
                   list(data["k_test"]), int(data["test_episodes"]), data["split"],
                   [tuple(pair) for pair in data.get("compare", [])],
                   [(tuple(a), tuple(b)) for a, b in data.get("interaction", [])])


def build_grid(spec: dict, where: str = "the grid") -> Grid:
    """A :class:`Grid` from a spec dict (the TOML file's form; see the module docstring)."""
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise UserError(f"unknown key {', '.join(unknown)} in {where}; known: "
                        f"{', '.join(GRID_KEYS)}")
    entries = spec.get("configs") or []
    if not entries:
        raise UserError(f"{where} has no configs: give --preset NAME (repeatable) or "
                        "[[configs]] entries")
    seeds = [int(s) for s in spec.get("seeds", [1, 2, 3])]
    k_test = [int(k) for k in spec.get("k_test", [1, 5, 10, 15])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: seeds must be a non-empty list of distinct integers")
    if not k_test or min(k_test) < 1 or len(set(k_test)) != len(k_test):
        raise UserError(f"{where}: k_test must be a non-empty list of distinct integers ≥ 1")
    shared = _nested(spec.get("set", {}), f"{where} [set]")
    vary = spec.get("vary", {})
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where} [vary]: {key} needs a non-empty list of values")
    _nested({k: None for k in vary}, f"{where} [vary]")
    configs: dict[str, RunConfig] = {}
    for entry in entries:
        entry = dict(entry)
        name = entry.pop("name", None) or entry.get("preset")
        if not name:
            raise UserError(f"{where}: a config without a preset needs a name")
        data = to_dict(RunConfig())
        if entry.get("preset"):
            merge(data, preset(entry.pop("preset")), f"preset of {name}")
        merge(data, shared, f"{where} [set]")
        merge(data, _nested(entry, f"config {name}"), f"config {name}")
        for combination in itertools.product(*vary.values()):
            chosen = dict(zip(vary, combination))
            full = json.loads(json.dumps(data))
            merge(full, _nested(chosen, f"{where} [vary]"), f"{where} [vary]")
            label = "+".join([name] + [f"{k.replace('-', '_')}={_label(v)}"
                                       for k, v in chosen.items()])
            check_name(label)
            if label in configs:
                raise UserError(f"{where}: two configs are named {label!r}; give each a name")
            config = from_dict(full, f"config {label}")
            config.validate()
            configs[label] = config
    compare = [_pair(pair, configs, f"{where}: compare") for pair in spec.get("compare", [])]
    interaction = []
    for entry in spec.get("interaction", []):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise UserError(f"{where}: interaction takes pairs of pairs of config names, e.g. "
                            f'interaction = [[["a_off", "a_on"], ["b_off", "b_on"]]] (got '
                            f"{entry!r})")
        interaction.append(tuple(_pair(pair, configs, f"{where}: interaction")
                                 for pair in entry))
    return Grid(configs, seeds, k_test, int(spec.get("test_episodes", 1000)),
                spec.get("split", "test"), compare, interaction)


def _pair(pair: Any, configs: dict[str, RunConfig], where: str) -> Pair:
    """``[off, on]``, two config names of the grid."""
    if not (isinstance(pair, list) and len(pair) == 2):
        raise UserError(f'{where} takes pairs of config names, e.g. ["off", "on"] (got '
                        f"{pair!r})")
    unknown = [n for n in pair if n not in configs]
    if unknown:
        raise UserError(f"{where} names {', '.join(map(repr, unknown))}, not a config of the "
                        f"grid; its configs are {', '.join(configs)}")
    return pair[0], pair[1]


def read_grid_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A grid spec from a TOML file, or from a grid shipped in ``fwp/fewshot/sweeps/``, on top
    of the grid named by its ``base`` key if it has one."""
    path = grid_path(str(path), GRIDS_DIR)
    spec = read_file(path)
    core.check_types(spec, GRID_TYPES, str(path))
    if "base" not in spec:
        return spec
    if path.resolve() in _seen:
        raise UserError(f"grid file {path}: its base chain comes back to itself; remove a base")
    parent = read_grid_file(spec.pop("base"), _seen + (path.resolve(),))
    combined = {**parent, **spec}
    for key in ("compare", "interaction"):  # they go with the configs they name
        if "configs" in spec and key not in spec:
            combined.pop(key, None)
    for key in ("set", "vary"):
        combined[key] = {**parent.get(key, {}), **spec.get(key, {})}
    return combined


def grid_spec_from_args(presets: list[str], sets: list[tuple[str, Any]],
                        varies: list[tuple[str, list]], seeds: list[int] | None,
                        k_test: list[int] | None, episodes: int | None,
                        base: dict | None = None) -> dict:
    """The grid spec of a command line (on top of a grid file's ``base`` spec)."""
    spec = json.loads(json.dumps(base or {}))
    if presets:
        spec["configs"] = spec.get("configs", []) + [{"preset": p} for p in presets]
    spec.setdefault("set", {}).update(dict(sets))
    spec.setdefault("vary", {}).update(dict(varies))
    for key, value in (("seeds", seeds), ("k_test", k_test), ("test_episodes", episodes)):
        if value is not None:
            spec[key] = value
    return spec


def load_saved_grid(root: Path) -> Grid:
    """The grid an earlier start of the sweep in ``root`` recorded."""
    path = root / GRID
    if not path.is_file():
        raise UserError(f"{root} holds no sweep ({GRID} missing); give --grid FILE or --preset")
    return Grid.from_json(json.loads(path.read_text()))

