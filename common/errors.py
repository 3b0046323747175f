"""Bad input becomes one clear line on stderr and exit status 2, never a traceback."""

import sys


class ConfigError(ValueError):
    """An impossible value on the command line (negative steps, batch size 0, ...)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, or of the wrong kind."""


class DataError(ValueError):
    """A bad dataset path, file or value: a one-line message naming it and what was expected."""


def warn(message: str) -> None:
    """Print a one-line warning to stderr; the program goes on."""
    print(f"warning: {message}", file=sys.stderr)


def main_guard(main) -> None:
    """Run `main()`, turning the project's input errors into one line and exit status 2, and an
    impatient Ctrl-C (the second one, while a checkpoint is being written) into a quiet exit 130:
    checkpoints are written atomically, so the last complete one is intact. An int that `main`
    returns is the exit status (a stage stopped by a signal returns 128 + its number)."""
    try:
        status = main()
    except (ConfigError, CheckpointError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: stopped at once; the last checkpoint written is intact",
              file=sys.stderr)
        sys.exit(130)
    if status:
        sys.exit(status)


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive(cfg, names: tuple[str, ...]) -> None:
    """ConfigError naming the flag when any of these config fields is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        require(value > 0, f"--{name.replace('_', '-')} {value}: expected a positive number")
