"""What the explorer's server accepts: the limits it refuses past, and every value the page sends,
checked against the model and those limits. A bad value is a BadRequest, answered with status 400
(unless it says otherwise) and {"error": "one line naming it"}."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

from common.errors import ConfigError
from diffusion.guidance import check_interval
from explorer.session import Explorer, Settings


@dataclass
class Limits:
    """What the server refuses past, whatever the page allows."""
    max_images: int = 8             # images per job
    max_steps: int = 1000           # sampling steps per image (DDPM always takes all T)
    max_queue: int = 8              # jobs waiting at once
    max_body: int = 4 * 2**20       # bytes of one request (an upload is about 4/3 its file size)
    max_prompt: int = 300           # characters of a prompt


MAX_DIGITS = 30      # digits of a whole number in a request (int() refuses past 4300)


class BadRequest(ValueError):
    """A value the server refuses: answered with `status` (400 unless said) and the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def shown(value, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters, for a one-line message about any value sent."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def number(data: dict, name: str, kind, low, high, default):
    """data[name] as int or float within [low, high], or BadRequest naming the value."""
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):   # NaN, Infinity, 1e400
        raise BadRequest(f"{name} {shown(value)}: expected a number from {low} to {high}")
    if kind is int and value != int(value):
        raise BadRequest(f"{name} {shown(value)}: expected a whole number from {low} to {high}")
    if not low <= value <= high:
        raise BadRequest(f"{name} {shown(value)}: expected a number from {low} to {high}")
    return kind(value)


def parse_json(body: bytes):
    """A request body -> the JSON value it holds (an empty body: {}), or BadRequest naming what
    is wrong: not JSON, a number of more than MAX_DIGITS digits, nesting past Python's recursion
    limit. NaN, Infinity and 1e400 are read as floats, for number() to refuse by name."""
    def whole(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_DIGITS:
            raise BadRequest(f"the number {digits[:12]}... of {len(digits)} digits: expected at "
                             f"most {MAX_DIGITS} digits")
        return int(digits)
    try:
        return json.loads(body or b"{}", parse_int=whole)
    except RecursionError:
        raise BadRequest("the body is nested too deep: expected one JSON object of "
                         "settings") from None
    except BadRequest:
        raise
    except ValueError as error:   # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"the body is not JSON ({error})") from None


def text(data: dict, name: str, limit: int) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected a text, got {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(f"{name}: {len(value)} characters; at most {limit}")
    return value


def interval(data: dict) -> tuple[float, float]:
    """guidance_interval: [lo, hi], two noise levels, as sample.py's --guidance-interval (its
    check, diffusion.guidance.check_interval); default [0, 1], every step."""
    value = data.get("guidance_interval", [0.0, 1.0])
    if not isinstance(value, list) or len(value) != 2:
        raise BadRequest(f"guidance_interval {shown(value)}: expected [lo, hi], 0 <= lo <= hi <= 1")
    levels = [number({"guidance_interval": v}, "guidance_interval", float, 0, 1, 0.0)
              for v in value]
    try:
        return check_interval(levels)
    except ConfigError as error:
        raise BadRequest(str(error).replace("--guidance-interval", "guidance_interval", 1)) from None


def parse_settings(data: dict, explorer: Explorer, limits: Limits, extra=()) -> Settings:
    """The form's values -> Settings, each checked against the model and the limits; `extra`:
    the other names the endpoint reads itself."""
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object of settings")
    known = {f.name for f in fields(Settings)} | set(extra)
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadRequest(f"unknown setting {shown(unknown[0])}; expected some of "
                         f"{', '.join(sorted(known))}")
    sampler = data.get("sampler", explorer.default_sampler)
    if sampler not in explorer.samplers:
        raise BadRequest(f"sampler {shown(sampler)}: expected one of "
                         f"{', '.join(explorer.samplers)}")
    T = explorer.num_timesteps
    steps = number(data, "steps", int, 1, min(T, limits.max_steps), Settings.steps)
    if sampler == "ddpm" and T > limits.max_steps:
        raise BadRequest(f"sampler 'ddpm' takes all {T} steps; this server allows at most "
                         f"{limits.max_steps} (choose ddim or dpm++)")
    settings = Settings(
        prompt=text(data, "prompt", limits.max_prompt),
        negative_prompt=text(data, "negative_prompt", limits.max_prompt),
        sampler=sampler, steps=steps,
        guidance=number(data, "guidance", float, 0, 30, explorer.default_guidance),
        eta=number(data, "eta", float, 0, 1, 0.0),
        seed=number(data, "seed", int, 0, 2**31 - 1, 0),
        n=number(data, "n", int, 1, limits.max_images, Settings.n),
        guidance_interval=interval(data))
    if sampler not in ("ddpm", "ddim") and settings.eta != 0:
        raise BadRequest(f"eta {settings.eta}: {sampler} is deterministic (eta 0)")
    if not explorer.has_text and (settings.prompt or settings.negative_prompt):
        raise BadRequest("prompt: this model has no text encoder (a stage-1 or unconditional "
                         "model); leave the prompt empty")
    return settings
