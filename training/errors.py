"""Bad input becomes one clear line on stderr and exit status 2, never a traceback."""

import sys

from data import DataError


class ConfigError(ValueError):
    """An impossible value on the command line (negative steps, batch size 0, ...)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, or of the wrong kind."""


def main_guard(main) -> None:
    """Run `main()`, turning the project's input errors into one line and exit status 2."""
    try:
        main()
    except (ConfigError, CheckpointError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive(cfg, names: tuple[str, ...]) -> None:
    """ConfigError naming the flag when any of these config fields is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        require(value > 0, f"--{name.replace('_', '-')} {value}: expected a positive number")
