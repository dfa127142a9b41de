"""The configuration core shared by every workflow: typed schemas, files and flags.

A workflow's run config is a tree of dataclasses. Each leaf is declared with :func:`option` (its
default, its help text and, where it names a registered thing, the registry it chooses from) and
becomes one flag ``--name`` (underscores → dashes); each nested dataclass (:func:`section`) is a
table of a config file (``[network]``) and a group of flags. Values are layered, last one winning::

    defaults ← files (.toml / .json) ← flags given

A table of keyword options (a ``dict`` leaf: a data set's loader options, a layer's options) is
merged key by key across the layers; on the command line each entry is one repeatable
``KEY=VALUE`` (VALUE read as a TOML value where it parses as one, else as a string).
A workflow keeps only its schema and its ``validate``; everything else is here.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import errno
import importlib
import io
import json
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import Field, field, fields
from pathlib import Path
from typing import Any

from fwp.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# A tuple of names, or "module:NAME" naming a registry (a dict or tuple) imported when needed.
Choices = tuple[str, ...] | str
# What a resumed run may do with a field (see option); the run core (fwp.runs) applies them.
RESUME_POLICIES = ("match", "announce", "runtime")


def option(
    default: Any,
    help: str,  # noqa: A002 - the name argparse uses
    *,
    choices: Choices | None = None,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    resume: str = "match",
) -> Any:
    """A leaf field: ``default`` (copied per instance when mutable), its ``--help`` text, and
    ``choices``: a tuple, or ``"module:NAME"``, a registry whose keys are the names (imported
    only when the names are needed, so that a schema imports no heavy module).
    ``flag`` replaces the flag's name (default: the field name with dashes); ``aliases`` are
    further names of the same flag. ``resume``: what a resumed run may do with the field
    (:data:`RESUME_POLICIES`): ``match`` the checkpoint's value, ``announce`` a change (it is
    applied and printed), or change it freely as ``runtime`` (how the run is executed, not what
    it computes: also ignored when a sweep compares a run folder with its grid)."""
    if resume not in RESUME_POLICIES:
        raise ValueError(f"resume policy {resume!r} is not one of {RESUME_POLICIES}")
    metadata = {"help": help, "choices": choices, "flag": flag, "aliases": aliases,
                "resume": resume}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested dataclass: a ``[table]`` of config files and a group of flags."""
    return field(default_factory=cls)


def choices_of(f: Field) -> tuple[str, ...] | None:
    """The names a field chooses from (None: free)."""
    choices = f.metadata.get("choices")
    if isinstance(choices, str):
        module, _, name = choices.partition(":")
        choices = getattr(importlib.import_module(module), name)
    return None if choices is None else tuple(choices)


def flag_name(name: str) -> str:
    """The flag of field ``name``: underscores → dashes."""
    return name.replace("_", "-")


def flag_of(f: Field) -> str:
    return f.metadata.get("flag") or flag_name(f.name)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Field, Any]]:
    """``(path, field, type)`` of every leaf of schema ``cls``, depth first."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(leaves(hint, prefix + (f.name,)))
        else:
            out.append((prefix + (f.name,), f, hint))
    return out


def flat(cls: type, config: Any) -> dict[str, Any]:
    """Leaf name → value of ``config`` (an instance of schema ``cls``, or its dict)."""
    data = config if isinstance(config, dict) else to_dict(config)
    out = {}
    for path, _, _ in leaves(cls):
        value = data
        for key in path:
            value = value[key]
        out[path[-1]] = value
    return out


def nest(cls: type, data: dict[str, Any], where: str) -> dict:
    """Leaf name → value (a grid's ``[set]``) as the nested partial dict of schema ``cls``; a
    name that is no leaf of ``cls`` is one line naming it."""
    paths = {path[-1]: path for path, _, _ in leaves(cls)}
    out: dict = {}
    for key, value in data.items():
        if key not in paths:
            raise UserError(f"{where}: {key!r} is not a field of the run config")
        node = out
        for part in paths[key][:-1]:
            node = node.setdefault(part, {})
        node[key] = value
    return out


# -- building and layering --------------------------------------------------------------------


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Schema ``cls`` from a (possibly partial) nested dict: missing fields take their defaults,
    unknown ones and values of the wrong type are an error naming ``where``."""
    merged = to_dict(cls())
    merge(merged, data, where, cls)
    return _build(cls, merged, where)


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        hint, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, f"{where} [{f.name}]")
        else:
            kwargs[f.name] = _coerce(hint, value, f"{where}: {f.name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is dict or hint is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise UserError(f"{where} needs a table of options, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (list, tuple)):
            return [_coerce(item, v, where) for v in value]
        raise UserError(f"{where} needs a list of {item.__name__}, got {value!r}")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    article = "an" if hint is int else "a"
    raise UserError(f"{where} needs {article} {hint.__name__}, got {value!r}")


def check_types(data: dict, types: dict[str, Any], where: str) -> None:
    """Raise unless each key of ``types`` that ``data`` has holds a value of that type (a
    schema-less file's fields, checked by the rules of the config files)."""
    for key, hint in types.items():
        if key in data:
            _coerce(hint, data[key], f"{where}: {key}")


def merge(base: dict, update: dict, where: str, cls: type) -> None:
    """Write the (partial) dict ``update`` into ``base`` in place, following schema ``cls``:
    sections recurse, option tables add their keys, other values replace."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    renamed = {alias.replace("-", "_"): f.name for f in fields(cls)
               for alias in f.metadata.get("aliases", ())}
    for key, value in update.items():
        key = renamed.get(key, key) if key not in known else key  # a file from before a rename
        if key not in known:
            raise UserError(f"unknown field {key!r} in {where}; known: {', '.join(known)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{key!r} in {where} must be a section [{key}]")
            merge(base.setdefault(key, {}), value, f"{where} [{key}]", hint)
        elif (typing.get_origin(hint) is dict or hint is dict) and isinstance(value, dict):
            base[key] = {**(base.get(key) or {}), **value}
        else:  # checked here, so that a wrong type names the file or flag it came from
            base[key] = _coerce(hint, value, f"{where}: {key}")


def refuse_unused(config: Any, flags: dict) -> None:
    """Raise for the first leaf given in ``flags`` (the command line's partial dict) that
    ``config.unused()`` (field name → why this run never reads it) names: a flag accepted and
    then ignored would change nothing while the user believes it did."""
    unused = config.unused()
    for path, f, _ in leaves(type(config)):
        if f.name in unused and path[-1] in _parent(flags, path):
            raise UserError(f"--{flag_of(f)} does nothing in this run: {unused[f.name]}; "
                            f"drop --{flag_of(f)}")


def _parent(data: dict, path: tuple[str, ...]) -> dict:
    for key in path[:-1]:
        data = data.get(key) or {}
    return data


def check_choices(config: Any, skip: tuple[str, ...] = ()) -> None:
    """Raise for the first leaf whose value is not among its field's choices."""
    for path, f, _ in leaves(type(config)):
        allowed = choices_of(f)
        if allowed is None or f.name in skip:
            continue
        value = config
        for key in path:
            value = getattr(value, key)
        if value not in allowed:
            raise UserError(
                f"unknown --{flag_of(f)} {value!r}; choose one of {', '.join(allowed)}"
            )


# -- files ------------------------------------------------------------------------------------


def read_file(path: str | Path, presets: Path | None = None, cls: type | None = None) -> dict:
    """A (partial) config dict from a ``.toml`` or ``.json`` file. With a ``presets`` folder, a
    top-level ``base = "NAME"`` starts from ``presets/NAME.toml`` (merged by schema ``cls``)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder; pass the .toml or .json file in it")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not text (not UTF-8); pass a .toml or .json "
                        "file") from None
    except OSError as error:
        raise UserError(f"cannot read config file {path} ({error.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"config file {path} is not valid {path.suffix[1:]}: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} holds a JSON {type(data).__name__}, not an object "
                        "of config fields")
    if presets is None or "base" not in data:
        return data
    combined = read_preset(presets, data.pop("base"), cls)
    merge(combined, data, str(path), cls)
    return combined


def preset_names(presets: Path) -> list[str]:
    return sorted(p.stem for p in presets.glob("*.toml"))


def read_preset(presets: Path, name: str, cls: type) -> dict:
    """The (partial) config dict of preset ``presets/NAME.toml``."""
    path = presets / f"{name}.toml"
    if not path.is_file():
        raise UserError(
            f"unknown preset {name!r}; choose one of {', '.join(preset_names(presets))}"
        )
    return read_file(path, presets, cls)


def write_atomic(path: Path, data: Any) -> None:
    """Write bytes, text, JSON (a ``.json`` path) or a torch object to a temporary file, flush it
    to disk, then rename it over ``path``: a crash, a kill or a full disk never leaves a
    half-written file, and the previous version of ``path`` stays until the new one is whole.

    A failure (a full disk, a size limit, no permission) removes the temporary file and raises
    :class:`UserError` naming ``path`` and the fix.
    """
    path = Path(path)
    if isinstance(data, str):
        payload = data.encode()
    elif isinstance(data, bytes):
        payload = data
    elif path.suffix == ".json":
        payload = (json.dumps(data, indent=2) + "\n").encode()
    else:  # serialised in memory first: torch.save reports a failed write only as RuntimeError
        import torch

        buffer = io.BytesIO()
        torch.save(data, buffer)
        payload = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        # The clean-up must not replace the real error (a read-only folder refuses the unlink
        # too, and its error would hide why the write failed).
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteFailed(write_failure(path, error)) from None
        raise


class WriteFailed(UserError):
    """A file could not be written (full disk, size limit, permissions); nothing half-written
    was left behind."""


def write_failure(path: Path, error: OSError) -> str:
    """``cannot write PATH (reason): fix`` for an OSError raised while writing ``path``."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = (f"the disk (or a quota or file-size limit) is full; {path.name} keeps its previous "
               f"version, if it had one. Free space, then run the command again")
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "the folder is not writable; fix its permissions or write somewhere else"
    else:
        fix = "check the path and the disk, then run the command again"
    return f"cannot write {path} ({reason}): {fix}"


# -- command line -----------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A TOML value (``true``, ``28``, ``0.5``, ``"a b"``, ``[1, 2]``) where ``text`` parses as
    one (Python's ``True`` / ``False`` too), else the text itself as a string."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_options(text: str) -> dict[str, Any]:
    """One command-line entry of an option table: ``KEY=VALUE`` (see :func:`parse_value`), or a
    JSON object of several, e.g. ``'{"n_beta": 4}'``."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"not a valid JSON object: {error}") from None
        if isinstance(value, dict):
            return value
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return {key: parse_value(value)}


def _parse_as(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            article = "an" if kind is int else "a"
            raise argparse.ArgumentTypeError(f"not {article} {kind.__name__}: {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _help(f: Field, default: Any) -> str:
    text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
    choices = choices_of(f)
    if choices is not None:
        text += f"; one of: {', '.join(choices)}"
    if isinstance(default, list):
        return f"{text} (default: {' '.join(map(str, default))})"
    if isinstance(default, dict):
        return f"{text}; KEY=VALUE, repeatable (default: {default or 'none'})"
    return f"{text} (default: {default!r})"


def add_flags(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), title: str = "run"
) -> None:
    """One flag per leaf of schema ``cls`` (but those in ``skip``), grouped by section (``title``
    for the top-level leaves); a flag not given parses as None, so that it overrides nothing."""
    defaults = to_dict(cls())
    groups: dict[str, Any] = {}
    for path, f, hint in leaves(cls):
        if f.name in skip:
            continue
        section_name = path[0] if len(path) > 1 else title
        if section_name not in groups:
            groups[section_name] = parser.add_argument_group(f"{section_name} options")
        default = defaults
        for key in path:
            default = default[key]
        names = [f"--{flag_of(f)}", *(f"--{a}" for a in f.metadata.get("aliases", ()))]
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": _help(f, default)}
        if typing.get_origin(hint) is dict or hint is dict:
            kwargs.update(action="append", type=parse_options, metavar="KEY=VALUE")
        elif typing.get_origin(hint) is list:
            (item,) = typing.get_args(hint)
            kwargs.update(nargs="+", type=_parse_as(item), metavar=item.__name__.upper())
        elif hint is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        else:
            metavar = "NAME" if f.metadata.get("choices") else hint.__name__.upper()
            kwargs.update(type=_parse_as(hint), metavar=metavar)
        groups[section_name].add_argument(*names, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict:
    """The leaves of schema ``cls`` given as flags, as a nested (partial) dict."""
    data: dict = {}
    for path, f, hint in leaves(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if typing.get_origin(hint) is dict or hint is dict:
            value = {k: v for entry in value for k, v in entry.items()}
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


def resolve(cls: type, layers: list[tuple[str, dict | None]]) -> Any:
    """Schema ``cls`` from its defaults and each ``(where, partial dict)`` layer in turn, last one
    winning (None: a layer that is absent this time)."""
    data = to_dict(cls())
    for where, update in layers:
        if update:
            merge(data, update, where, cls)
    return _build(cls, data, "config")
