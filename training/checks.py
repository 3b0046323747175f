"""Checks of settings that a model or a schedule cannot work with, in one place for the stage
scripts (whose --flags they name) and for checkpoint loading (whose stored config they name).

Each check takes the settings as a mapping (a stage's config as a dict, or a checkpoint's
"config") and returns the problems it finds as (name, "value: what was expected") pairs;
`require_valid` turns the first into a ConfigError naming the flag, `checkpoint_problem` into
the words of a CheckpointError.
"""

from collections.abc import Mapping

from training.config import flag
from training.errors import ConfigError

NUM_GROUPS = 32  # GroupNorm groups in the UNet and the autoencoder: every width must divide by it

Problem = tuple[str, str]


def schedule_problems(c: Mapping) -> list[Problem]:
    """[P2] T >= 1 noising steps and 0 < beta_1 <= beta_T < 1: every alpha_t = 1 - beta_t in
    (0, 1), so alpha_bar_t = prod alpha_s stays in (0, 1) and the noising is a real variance."""
    problems = []
    if not isinstance(c["num_train_timesteps"], int) or c["num_train_timesteps"] < 1:
        problems.append(("num_train_timesteps", f"{c['num_train_timesteps']}: expected 1 or more"))
    beta_start, beta_end = c["beta_start"], c["beta_end"]
    if not 0 < beta_start < 1:
        problems.append(("beta_start", f"{beta_start}: expected 0 < beta_start <= beta_end "
                                       f"({beta_end}) < 1"))
    elif not beta_start <= beta_end < 1:
        problems.append(("beta_end", f"{beta_end}: expected beta_start ({beta_start}) <= "
                                     "beta_end < 1"))
    if c["beta_schedule"] not in ("linear", "cosine"):
        problems.append(("beta_schedule", f"{c['beta_schedule']!r}: expected linear or cosine"))
    if c["prediction_type"] not in ("epsilon", "v"):
        problems.append(("prediction_type", f"{c['prediction_type']!r}: expected epsilon or v"))
    return problems


def widths_problems(c: Mapping, resolution: int | None, what: str) -> list[Problem]:
    """base_channels, channel_mult and the resolution they work at: at least one level, widths
    that GroupNorm's groups divide, and a resolution that halves evenly down to the last level."""
    mult = list(c["channel_mult"])
    if not mult or not all(isinstance(m, int) and m > 0 for m in mult):
        return [("channel_mult", f"{' '.join(map(str, mult)) or '(empty)'}: expected one "
                                 "positive multiplier per level, at least one level")]
    problems = []
    widths = [c["base_channels"]] + [c["base_channels"] * m for m in mult]
    if any(width % NUM_GROUPS for width in widths):
        problems.append(("base_channels", f"{c['base_channels']}: GroupNorm's {NUM_GROUPS} groups "
                         f"must divide every width of the {what} (base_channels x channel_mult "
                         f"= {widths[1:]}); expected a multiple of {NUM_GROUPS}"))
    factor = 2 ** (len(mult) - 1)
    if resolution is not None and resolution % factor:
        problems.append(("channel_mult", f"{' '.join(map(str, mult))}: {len(mult)} levels halve "
                         f"the size {len(mult) - 1} times, which {resolution}x{resolution} "
                         f"does not allow (it must be divisible by {factor})"))
    return problems


def unet_problems(c: Mapping, resolution: int | None) -> list[Problem]:
    """[P5] The UNet's settings: widths, levels with attention, heads that divide their widths,
    dropout a probability."""
    problems = widths_problems(c, resolution, "UNet")
    if problems:
        return problems
    levels = len(c["channel_mult"])
    if not all(0 <= level < levels for level in c["attention_levels"]):
        return [("attention_levels", f"{' '.join(map(str, c['attention_levels']))}: levels run "
                                     f"from 0 to {levels - 1}")]
    heads = c.get("num_heads", 4)
    attended = {c["base_channels"] * c["channel_mult"][level]
                for level in [*c["attention_levels"], levels - 1]}  # the middle block attends too
    if heads < 1 or any(width % heads for width in attended):
        problems.append(("num_heads", f"{heads}: must divide the width of every level with "
                                      f"attention ({sorted(attended)})"))
    if not 0 <= c["dropout"] < 1:
        problems.append(("dropout", f"{c['dropout']}: expected a probability, 0 <= p < 1"))
    return problems


def discriminator_problems(c: Mapping) -> list[Problem]:
    """[P11] The PatchGAN: a positive width that GroupNorm divides twice over, and few enough
    stride-2 layers that the image still gives a map of patches (image_size / 2^layers >= 3)."""
    if c["disc_channels"] < 1 or (2 * c["disc_channels"]) % NUM_GROUPS:
        return [("disc_channels", f"{c['disc_channels']}: expected a positive multiple of "
                                  f"{NUM_GROUPS // 2} (GroupNorm's {NUM_GROUPS} groups divide "
                                  "twice that)")]
    if c["disc_layers"] < 1 or c["image_size"] // 2 ** c["disc_layers"] < 3:
        return [("disc_layers", f"{c['disc_layers']}: expected 1 or more, and at most "
                                f"log2(image_size / 3) for {c['image_size']}x{c['image_size']}")]
    return []


def range_problems(c: Mapping, fractions=(), non_negative=()) -> list[Problem]:
    """Settings that must lie in [0, 1) (decays, probabilities) or be >= 0 (weights)."""
    problems = [(name, f"{c[name]}: expected 0 <= value < 1") for name in fractions
                if not 0 <= c[name] < 1]
    return problems + [(name, f"{c[name]}: expected 0 or more") for name in non_negative
                       if c[name] < 0]


def require_valid(problems: list[Problem]) -> None:
    """ConfigError naming the flag of the first problem: `--beta-end 2.0: expected ...`."""
    if problems:
        name, message = problems[0]
        raise ConfigError(f"{flag(name)} {message}")


def checkpoint_problem(problems: list[Problem]) -> str | None:
    """The first problem in the words of a stored config: `its config has beta_end 2.0: ...`."""
    if problems:
        name, message = problems[0]
        return f"its config has {name} {message}"
    return None
