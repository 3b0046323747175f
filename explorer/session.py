"""What the explorer page computes, each with the functions sample.py uses (diffusion.pipeline):

    generate   prompt, seed and sampler settings -> images, with x_t and the predicted x0 at up
               to 50 steps of the way (points 4, 7) and, for a text model, where each word of
               the prompt looks at those steps (point 16)
    rerun      one image's predicted x0 at step k, re-noised to step k with new noise and sampled
               from there: variations that keep what the model had decided by step k (point 8)
    sdedit     an uploaded image noised to step strength * T and sampled from there (point 8)
    sweep      one seed at guidance w = 0, 1, 3, 7 (point 16)
    similarity a text against a few held-out images through the checkpoint's CLIP (point 15)

Generate gives exactly the images of `python sample.py --ckpt CKPT --n N --seed SEED ...` with the
same settings: the same function (diffusion.pipeline.generate), the same noise per seed, one
batch, and recording the trajectory and the attention weights does not change a bit of the result.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from common.checkpoints import load_checkpoint
from data.images import load_square_image, to_tensor
from data.latents import load_latents
from diffusion.flow import FLOW_SAMPLERS, FlowMatching
from diffusion.pipeline import checkpoint_problem, generate, pipeline_from_state
from diffusion.sampling import (DDPM_SAMPLERS, make_sampler, model_calls, spread_steps,
                               visited_timesteps)
from models.attention import AttentionRecorder
from models.clip import load_clip
from models.clip_eval import caption_keys, embed_latents, embed_texts

SWEEP_SCALES = (0.0, 1.0, 3.0, 7.0)   # the guidance sweep: unconditional, plain, default, strong
TRAJECTORY_STEPS = 50                 # the most steps of the way kept per image
SIMILARITY_IMAGES = 8                 # held-out images a text is compared with
MAX_UPLOAD_PIXELS = 4096 * 4096       # an upload's width x height at most (a decompression bomb)


@dataclass
class Settings:
    """What the page's form sends; checked by explorer.server.parse_settings."""
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = "dpm++"
    steps: int = 20
    guidance: float = 3.0
    eta: float = 0.0
    seed: int = 0
    n: int = 4
    guidance_interval: tuple = (0.0, 1.0)   # guide only at noise levels lo..hi (0: data, 1: noise)


@dataclass
class Result:
    """The images of one job, with everything the page shows about them."""
    settings: Settings
    images: torch.Tensor                   # (N, 3, S, S) in [-1, 1], not clamped
    labels: list[str]                      # one caption per image ("seed 3", "w = 7")
    seeds: list[int]
    steps: list = field(default_factory=list)  # timesteps t of the kept steps (flow: t in [0, 1])
    x_t: torch.Tensor | None = None        # (K, N, 3, S, S) the sample at each kept step
    x0: torch.Tensor | None = None         # (K, N, 3, S, S) the predicted x0 there
    x0_model: torch.Tensor | None = None   # (K, N, C, h, w) the same in the model's space (rerun)
    attention: torch.Tensor | None = None  # (K, N, L, h, w) per word at each kept step
    attention_mean: torch.Tensor | None = None  # (N, L, h, w) over all steps
    tokens: list[dict] = field(default_factory=list)  # [{"word", "known"}] along L


def read_upload(data: bytes, size: int) -> torch.Tensor:
    """An uploaded image file's bytes -> (1, 3, size, size) in [-1, 1], center-cropped and resized
    as sample.py --init-image reads a file. ValueError if the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise ValueError(f"{image.width}x{image.height} pixels; at most "
                                 f"{MAX_UPLOAD_PIXELS} are read")
            image.verify()                                 # a truncated or forged file fails here
        return to_tensor(load_square_image(io.BytesIO(data), size))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # PIL's own check, in Image.open, before ours: a few KB that would decode to GBs
        raise ValueError(f"too many pixels, at most {MAX_UPLOAD_PIXELS} are read "
                         f"({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"the upload is not a readable image ({error})") from None


class Explorer:
    """A loaded checkpoint (stage 1 or stage 4) and the computations of the page."""

    def __init__(self, ckpt: str | Path, device="cpu", clip: str | None = None):
        state = load_checkpoint(ckpt, kind=("ddpm", "ldm"), check=checkpoint_problem)
        self.device, self.ckpt = torch.device(device), str(ckpt)
        self.pipe = pipeline_from_state(state, self.device)   # stage 1 (pixels) or stage 4
        self.image_size = self.pipe.image_size
        self.default_guidance = float(self.pipe.config.get("guidance", 1.0))
        self.step = state["step"]
        self.clip, self.clip_note, self.held_out = None, "", None
        if self.has_text:
            self._load_clip(clip if clip is not None else self.pipe.config.get("clip", ""))

    @property
    def has_text(self) -> bool:
        return self.pipe.text is not None

    @property
    def is_pixel_model(self) -> bool:
        return self.pipe.vae is None

    @property
    def num_timesteps(self) -> int:
        return self.pipe.scheduler.num_train_timesteps

    @property
    def is_flow(self) -> bool:
        """A flow-matching model (diffusion/flow.py): sampled with euler or heun."""
        return isinstance(self.pipe.scheduler, FlowMatching)

    @property
    def samplers(self) -> tuple[str, ...]:
        return FLOW_SAMPLERS if self.is_flow else DDPM_SAMPLERS

    @property
    def default_sampler(self) -> str:
        return "euler" if self.is_flow else Settings.sampler

    def rerun_strength(self, t) -> float:
        """The strength at which sampling starts at the kept step t: DDPM's first visited
        timestep below round(strength T) is t at strength (t + 1) / T; a flow step starts at t."""
        return float(t) if self.is_flow else (t + 1) / self.num_timesteps

    def vocabulary(self) -> list[str]:
        return list(self.pipe.text.tokenizer.vocabulary) if self.has_text else []

    # ---- the model calls ----------------------------------------------------------------------

    def scheduler_for(self, settings: Settings):
        """(scheduler, eta) of the settings (a ValueError for a step count the model lacks)."""
        return make_sampler(self.pipe.scheduler, settings.sampler, settings.steps,
                            eta=settings.eta)

    def model_calls(self, settings: Settings, strength: float = 1.0) -> int:
        """The model calls one image of these settings takes (the progress bar's length)."""
        return model_calls(self.scheduler_for(settings)[0], strength)

    def _sample(self, settings: Settings, seeds: list[int], guidance: float, on_step=None,
                x_init: torch.Tensor | None = None, strength: float = 1.0,
                record: bool = True) -> Result:
        """One batch, image i from seeds[i], as sample.py draws it; the way kept when `record`."""
        scheduler, eta = self.scheduler_for(settings)
        visited = visited_timesteps(scheduler, strength)
        shown = spread_steps(visited, TRAJECTORY_STEPS) if record else None
        generator = torch.Generator().manual_seed(settings.seed)  # stochastic steps' noise
        recorder = None
        if self.has_text and record:   # the model call that starts each step (Heun: two a step)
            calls_per_step = 2 if settings.sampler == "heun" else 1
            index = {t: calls_per_step * i for i, t in enumerate(visited)}
            C, h, w = self.pipe.sample_shape
            recorder = AttentionRecorder(self.pipe.unet, len(seeds), (h, w),
                                         keep_calls=[index[t] for t in shown])
        try:
            images, way = generate(
                self.pipe, [settings.prompt] * len(seeds), seeds, guidance, scheduler,
                negative_prompt=settings.negative_prompt, eta=eta, generator=generator,
                x_init=x_init, strength=strength, trajectory_steps=shown, recorder=recorder,
                on_step=on_step, guidance_interval=settings.guidance_interval)
        finally:
            if recorder is not None:
                recorder.close()
        result = Result(settings, images, [f"seed {s}" for s in seeds], list(seeds))
        if way:
            result.steps = [float(t) if self.is_flow else int(t) for t, _, _ in way]
            result.x_t = torch.stack([self.pipe.decode(x_t) for _, x_t, _ in way])  # (K, N, 3, S, S)
            result.x0 = torch.stack([self.pipe.decode(x0) for _, _, x0 in way])
            result.x0_model = torch.stack([x0.cpu() for _, _, x0 in way])          # (K, N, C, h, w)
        if recorder is not None and recorder.count:
            result.attention, result.attention_mean = recorder.step_maps(), recorder.maps()
            result.tokens = self.tokens(settings.prompt)
        return result

    def tokens(self, prompt: str) -> list[dict]:
        """The prompt as the text encoder reads it (Tokenizer.tokens); a word outside the
        vocabulary is read as <unk> and marked known=False."""
        tokenizer = self.pipe.text.tokenizer
        unknown = set(tokenizer.unknown_words(prompt))
        return [{"word": token, "known": token not in unknown}
                for token in tokenizer.tokens(prompt)]

    def generate(self, settings: Settings, on_step=None) -> Result:
        """[P7] settings.n images, seeds seed .. seed + n - 1 (sample.py --n N --seed SEED)."""
        return self._sample(settings, [settings.seed + j for j in range(settings.n)],
                            settings.guidance, on_step)

    def rerun(self, parent: Result, image: int, step: int, seed: int, n: int,
              on_step=None) -> Result:
        """[P8] Variations from the parent's image `image` at its kept step `step` (an index of
        parent.steps): x0_pred there, re-noised to t = parent.steps[step] with the noise of
        seeds seed .. seed + n - 1, then the remaining steps with the parent's settings."""
        t = parent.steps[step]
        settings = Settings(**{**vars(parent.settings), "seed": seed, "n": n})
        x_init = parent.x0_model[step, image][None].to(self.device)   # (1, C, h, w)
        # sampling starts at t, from x_t = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t)
        # eps_seed (q(x_t | x0)), or for flow (1 - t) x0_pred + t eps_seed
        return self._sample(settings, [seed + j for j in range(n)], settings.guidance, on_step,
                            x_init=x_init, strength=self.rerun_strength(t))

    def sdedit(self, image: torch.Tensor, strength: float, settings: Settings,
               on_step=None) -> Result:
        """[P8] SDEdit (Meng et al. 2022): an uploaded image (1, 3, S, S) in [-1, 1], from
        read_upload, noised to step strength * T in closed form, then denoised with the settings
        (sample.py --init-image FILE --strength S)."""
        x = self.pipe.encode(image.to(self.device))   # (1, C, h, w): latents, as sample.py does
        return self._sample(settings, [settings.seed + j for j in range(settings.n)],
                            settings.guidance, on_step, x_init=x, strength=strength)

    def sweep(self, settings: Settings, on_step=None) -> Result:
        """[P16] One seed at guidance 0, 1, 3, 7: the same noise, more and more pull to the text."""
        parts = [self._sample(settings, [settings.seed], w, on_step, record=False)
                 for w in SWEEP_SCALES]
        return Result(settings, torch.cat([p.images for p in parts]),
                      [f"w = {w:g}" for w in SWEEP_SCALES], [settings.seed] * len(parts))

    # ---- CLIP ---------------------------------------------------------------------------------

    def _load_clip(self, path: str) -> None:
        """The CLIP whose text encoder the model reads, with a few held-out images, if the files
        are there; otherwise clip_note says why the similarity panel is off."""
        if not path or not Path(path).is_file():
            self.clip_note = (f"no CLIP checkpoint at {path!r}; start explore.py with --clip "
                              "RUN/clip/checkpoint.pt to compare texts with images")
            return
        try:
            clip = load_clip(path, self.device)
            held_out = load_latents(clip.config["vae"], "val", clip.scale_factor)
        except Exception as error:  # a missing cache or a broken file turns the panel off only
            self.clip_note = f"the CLIP panel is off: {error}"
            return
        z = held_out["mean"][:SIMILARITY_IMAGES].float()                 # (M, C, h, w) unscaled
        with torch.no_grad():
            self.held_out_images = clip.vae.decode(z.to(self.device)).float().cpu()
            self.held_out_vectors = embed_latents(clip.clip, z * clip.scale_factor, self.device)
        n = len(z)
        self.held_out_captions = caption_keys(
            None if held_out["attributes"] is None else held_out["attributes"][:n],
            held_out["attribute_names"], None if held_out["texts"] is None else held_out["texts"][:n])
        self.clip, self.clip_path = clip, path

    def similarity(self, text: str) -> list[float]:
        """[P15] cos(text, image) for each held-out image: unit vectors, so a dot product."""
        vector = embed_texts(self.clip.clip, self.clip.tokenizer, [text], self.device)  # (1, E)
        return (self.held_out_vectors @ vector.T)[:, 0].cpu().tolist()


def heat_png(heat: torch.Tensor, size: int) -> bytes:
    """A (h, w) attention map -> an RGBA PNG of size x size to lay over the image: a colour scale
    from blue (the map's least weight) to red (its most), more opaque where the weight is higher.
    Relative to the map's own range, so a word that looks everywhere alike still shows where it
    looks a little more."""
    import matplotlib

    heat = F.interpolate(heat[None, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0, 0]
    heat = ((heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)).numpy()  # [0, 1]
    rgba = matplotlib.colormaps["jet"](heat)                             # (size, size, 4)
    rgba[..., 3] = 0.25 + 0.5 * heat
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((rgba * 255).round().astype("uint8"), "RGBA").save(buffer, format="png")
    return buffer.getvalue()
