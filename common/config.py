"""Config: a dataclass whose fields are the defaults, one help text each, turned into --flags.

    @dataclass
    class Config:
        steps: int = option(2000, "optimizer steps")
        base_channels: int = option(64, "channels of the first level", fixed=True)

    cfg = parse_config(Config, presets=PRESETS, description="...")   # --steps 10 --preset cpu ...

Every field becomes `--field-name` with the field's type; bools become --flag / --no-flag, tuples
take several values, `repeat=True` collects a flag given several times; unknown flags and values
of the wrong type are rejected by argparse (exit status 2). `fixed=True` marks a setting that
shapes the weights or their meaning: it may not change when a run is resumed (training/run.py).

Checks of settings: each model and schedule says what it cannot work with as a list of
(name, "value: what was expected") problems (models/unet.py: unet_problems, ...), from a stage's
config or a checkpoint's stored one; `require_valid` turns the first into a ConfigError naming
the flag, `stored_problem` into the words of a CheckpointError.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping

from common.errors import ConfigError


def option(default, help: str, *, fixed: bool = False, choices: tuple | None = None,
        type=None, repeat: bool = False, required: bool = False):
    """A config field with its help text: `steps: int = option(2000, "optimizer steps")`.

    fixed:    the setting shapes the model (architecture, schedule): it cannot change on --resume
    choices:  the allowed values
    type:     the value's type when the default cannot tell it (a default of None)
    repeat:   the flag may be given several times; the values are collected in a tuple
    required: the flag must be given (the default is only a placeholder)
    """
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple for sequence defaults")
    return dataclasses.field(default=default, metadata={
        "help": help, "fixed": fixed, "choices": choices, "type": type, "repeat": repeat,
        "required": required})


def flag(name: str) -> str:
    """The command-line flag of a config field: base_channels -> --base-channels."""
    return "--" + name.replace("_", "-")


def build_parser(config_class, presets: dict | None = None,
                 description: str = "") -> argparse.ArgumentParser:
    """The argparse parser of a config dataclass (and of its presets, if any)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), default=None,
                            help="a named set of defaults: " + "; ".join(
                                f"{name}: {values.get('_doc', '')}" for name, values in presets.items()))
    for field in dataclasses.fields(config_class):
        meta, default = field.metadata, field.default
        kwargs = dict(default=default, help=meta.get("help", ""))
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("required"):
            kwargs.update(required=True, default=None)
        if isinstance(default, bool):
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, **kwargs)
        elif meta.get("repeat"):
            parser.add_argument(flag(field.name), action="append", type=meta.get("type") or str,
                                **{**kwargs, "default": None})
        elif isinstance(default, tuple):
            item_type = type(default[0]) if default else (meta.get("type") or str)
            parser.add_argument(flag(field.name), nargs="*", type=item_type, **kwargs)
        else:
            value_type = meta.get("type") or (type(default) if default is not None else str)
            parser.add_argument(flag(field.name), type=value_type, **kwargs)
    return parser


def parse_config(config_class, argv=None, presets: dict | None = None, description: str = ""):
    """Parse `argv` (default: sys.argv) into a filled `config_class` instance.

    `--preset NAME` first applies the values of `presets[NAME]`; flags given on the command line
    override them.
    """
    parser = build_parser(config_class, presets, description)
    # Presets change the defaults, so explicit flags still win.
    known, _ = parser.parse_known_args(argv)
    preset = getattr(known, "preset", None)
    if preset is not None:
        values = {k: v for k, v in presets[preset].items() if not k.startswith("_")}
        parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    args.pop("preset", None)
    for field in dataclasses.fields(config_class):
        value = args[field.name]
        if field.metadata.get("repeat"):
            args[field.name] = tuple(value) if value is not None else field.default
        elif isinstance(value, list):
            args[field.name] = tuple(value)
    return config_class(**args)


def format_config(cfg) -> str:
    """The config as indented `name = value` lines, for the start of a run's output."""
    return "\n".join(f"  {k} = {v}" for k, v in dataclasses.asdict(cfg).items())


def same_value(a, b) -> bool:
    """Config values compared as they come back from a checkpoint (tuples may be lists)."""
    return _plain(a) == _plain(b)


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def shown(value) -> str:
    """A config value as it is typed on the command line: (1, 2, 4) -> "1 2 4"."""
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


# ---- checks of settings ----------------------------------------------------------------------

Problem = tuple[str, str]  # (setting name, "value: what was expected")


def require_valid(problems: list[Problem]) -> None:
    """ConfigError naming the flag of the first problem: `--beta-end 2.0: expected ...`."""
    if problems:
        name, message = problems[0]
        raise ConfigError(f"{flag(name)} {message}")


def stored_problem(problems: list[Problem], where: str = "its config") -> str | None:
    """The first problem in the words of a stored config: `its config has beta_end 2.0: ...`."""
    if problems:
        name, message = problems[0]
        return f"{where} has {name} {message}"
    return None


def range_problems(c: Mapping, fractions=(), non_negative=()) -> list[Problem]:
    """Settings that must lie in [0, 1) (decays, probabilities) or be >= 0 (weights)."""
    problems = [(name, f"{c[name]}: expected 0 <= value < 1") for name in fractions
                if not 0 <= c[name] < 1]
    return problems + [(name, f"{c[name]}: expected 0 or more") for name in non_negative
                       if c[name] < 0]
