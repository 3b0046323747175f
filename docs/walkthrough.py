# %% [markdown]
# # Walkthrough: from one noisy face to the words a model looks at
#
# A runnable tour of the project in five parts, each built on its own modules:
#
# 1. noise a face in closed form, and take one reverse step by hand
#    ([page 3](03-closed-form-noising.md), [page 4](04-reverse-diffusion.md));
# 2. train a small pixel DDPM for a few hundred steps and watch its samples
#    ([page 6](06-training-loop.md));
# 3. encode a face, noise its latents, decode them ([page 12](12-latent-diffusion.md));
# 4. record where each word of a prompt looks ([page 16](16-cross-attention.md));
# 5. sweep the classifier-free guidance scale.
#
# Run it as `python docs/walkthrough.py` or `python -m docs.walkthrough` from the repository (the
# figures go to runs/walkthrough/), or open it as a notebook (VS Code, or Jupyter with jupytext),
# where the figures also show inline. `WALKTHROUGH_SIZE=full` (the default) takes a few minutes on a
# 2-core CPU; `small` runs each part in seconds (the test uses it). `WALKTHROUGH_OUT` names the
# output folder. Parts 3-5 use the checkpoints of `make demo` when they exist (`WALKTHROUGH_VAE`,
# `WALKTHROUGH_LDM` name others), and otherwise train tiny models here and say so.

# %%
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(globals().get("__file__", "walkthrough.py")).resolve().parent  # a notebook: its folder
ROOT = HERE.parent if HERE.name == "docs" else HERE                        # the repository
if str(ROOT) not in sys.path:  # `python docs/walkthrough.py` puts docs/, not the repository, first
    sys.path.insert(0, str(ROOT))

import matplotlib.pyplot as plt
import torch

from common import labelled_grid, pick_device, seed_everything, upscaled
from data.captions import VALIDATION_PROMPTS, caption, step_rng
from data.synthetic import sample_attributes
from diffusion import DDPMScheduler, Pipeline, generate, load_pipeline, make_sampler
from docs.figures.common import synthetic_faces
from models import (AttentionRecorder, AutoencoderKL, TextConditioner, Tokenizer, UNet,
                    load_vae)
from models.clip import TextEncoder
from models.losses import kl_loss, reconstruction_loss
from training.plots import save_attention_figure

# Every size of the walkthrough, in one place: full (a few minutes on a 2-core CPU) or small.
SIZES = {
    "full": dict(faces=512,          # synthetic faces to train on (drawn in about a second)
                 batch=32,           # images per training step
                 stage1_steps=300,   # part 2: steps of the pixel DDPM
                 vae_steps=200,      # part 3: steps of the tiny autoencoder (without a checkpoint)
                 ldm_steps=200,      # parts 4-5: steps of the tiny text-to-image UNet (ditto)
                 sample_steps=50,    # DDIM (or Euler) steps per image
                 log_every=50),      # steps between loss lines
    "small": dict(faces=32, batch=8, stage1_steps=20, vae_steps=10, ldm_steps=20, sample_steps=5,
                  log_every=10),
}
SIZE = os.environ.get("WALKTHROUGH_SIZE", "full")
if SIZE not in SIZES:
    raise SystemExit(f"WALKTHROUGH_SIZE={SIZE}: expected {' or '.join(SIZES)}")
S = SIZES[SIZE]
OUT = Path(os.environ.get("WALKTHROUGH_OUT", ROOT / "runs" / "walkthrough"))
VAE_CKPT = Path(os.environ.get("WALKTHROUGH_VAE", ROOT / "runs" / "demo" / "vae" / "checkpoint.pt"))
LDM_CKPT = Path(os.environ.get("WALKTHROUGH_LDM", ROOT / "runs" / "demo" / "ldm" / "checkpoint.pt"))
OUT.mkdir(parents=True, exist_ok=True)
DEVICE = pick_device()               # cuda > mps > cpu
FACE = 1                             # the face of parts 1 and 3 (synthetic face number 1)
IN_NOTEBOOK = "ipykernel" in sys.modules  # Jupyter or VS Code: figures are shown inline too
seed_everything(0)
START = time.time()
print(f"size {SIZE}, device {DEVICE}, figures in {OUT}")


def show(picture, name: str) -> None:
    """Save a PIL image or a matplotlib figure as OUT/name.png and show it (show_file)."""
    path = OUT / f"{name}.png"
    if hasattr(picture, "savefig"):
        picture.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(picture)
    else:
        picture.save(path)
    show_file(path)


def show_file(path: Path) -> None:
    """Say where a PNG was written; in a notebook, also show it inline."""
    print(f"wrote {path}")
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(filename=str(path)))


# %% [markdown]
# ## 1. Noise a face, then take one step back
#
# Training needs x_t for any t, and the t noising steps collapse into one Gaussian (DDPM eq. 4):
#
#     x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)
#     alpha_bar_t = prod_{s<=t} alpha_s,   alpha_s = 1 - beta_s
#
# `DDPMScheduler.add_noise` computes it; below it is computed again by hand, from the betas up.
# The code's t = 0 .. T-1 is the paper's 1 .. T, so alpha_bar_t multiplies t + 1 factors.

# %%
scheduler = DDPMScheduler()          # T = 1000, linear betas 1e-4 .. 0.02, predicts eps, clips x0
x0 = synthetic_faces([FACE], size=32)                                   # (1, 3, 32, 32) in [-1, 1]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # eps ~ N(0, I)
t = 300
x_t = scheduler.add_noise(x0, eps, torch.tensor([t]))                   # (1, 3, 32, 32)

betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)          # (T,) DDPM's linear beta_t
alpha_bar_t = torch.prod(1 - betas[:t + 1]).item()  # alpha_bar_t = prod_{s<=t} alpha_s, t+1 factors
x_t_by_hand = alpha_bar_t ** 0.5 * x0 + (1 - alpha_bar_t) ** 0.5 * eps  # DDPM eq. 4
print(f"alpha_bar_{t} = {alpha_bar_t:.4f}: that share of x_0's variance is left in x_{t}")
print(f"closed form: max |add_noise - by hand| = {(x_t - x_t_by_hand).abs().max():.2e}")

shown = [0, 50, 100, 200, 300, 500, 700, 999]
strip = torch.cat([scheduler.add_noise(x0, eps, torch.tensor([s]))
                   for s in shown])                                     # (8, 3, 32, 32)
show(labelled_grid(strip, ["x_t, one eps"], [f"t = {s}" for s in shown]), "1_closed_form")

# %% [markdown]
# One reverse step, as `DDPMScheduler.step` takes it ([page 4](04-reverse-diffusion.md)): guess the
# clean image from the noise (eq. 15), take the mean of q(x_{t-1} | x_t, x_0) with that guess
# (eq. 7), add sigma_t z. Given the *true* noise, x0_pred is x_0 itself, and the step lands where
# the forward process says x_{t-1} lies given both ends. The same z (the same seed) goes into both.

# %%
beta_t = betas[t].item()
alpha_t = 1 - beta_t                                                    # alpha_t = 1 - beta_t
alpha_bar_prev = torch.prod(1 - betas[:t]).item()                       # alpha_bar_{t-1}
# 1. x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)                  DDPM eq. 15
x0_pred = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5  # (1, 3, 32, 32)
# 2. mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x0_pred
#          + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t                  DDPM eq. 7
posterior_mean = (alpha_bar_prev ** 0.5 * beta_t / (1 - alpha_bar_t) * x0_pred
                  + alpha_t ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)
# 3. x_{t-1} = mu~_t + sigma_t z,
#    sigma_t^2 = beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)              DDPM eq. 7
sigma_t = (beta_t * (1 - alpha_bar_prev) / (1 - alpha_bar_t)) ** 0.5
z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))  # z ~ N(0, I)
x_prev_by_hand = posterior_mean + sigma_t * z                           # (1, 3, 32, 32)

out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(1))  # [P4] the same z
# the video's form of the mean, DDPM Algorithm 2 line 4:
#    1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps)
video_mean = (x_t - beta_t / (1 - alpha_bar_t) ** 0.5 * eps) / alpha_t ** 0.5
print(f"x0_pred from the true noise: max |x0_pred - x_0| = {(x0_pred - x0).abs().max():.2e}")
print(f"reverse step: max |step - by hand| = {(out.prev_sample - x_prev_by_hand).abs().max():.2e}")
print(f"the video's form: max |eq. 7 mean - Algorithm 2 mean| = "
      f"{(posterior_mean - video_mean).abs().max():.2e}")

# %% [markdown]
# ## 2. A short stage-1 training, with live samples
#
# The loop of `train_unconditional.py` without its bookkeeping (DDPM Algorithm 1): a batch of faces,
# a random t and eps per face, x_t in closed form, and the mean squared error between eps and the
# UNet's guess. The faces are 16x16 here so that a few hundred steps show something; the UNet is
# the shape of the CPU preset. Expect coloured face-shaped blobs, not faces: the demo's stage 1 at
# 32x32 is still at blobs after 200 steps.

# %%
faces16 = synthetic_faces(range(S["faces"]), size=16).to(DEVICE)       # (N, 3, 16, 16)
unet = UNet(in_channels=3, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_levels=(2,)).to(DEVICE)                          # 16 -> 8 -> 4 pixels
scheduler = DDPMScheduler().to(DEVICE)                                  # as in part 1
optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
print(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, "
      f"{S['stage1_steps']} steps of {S['batch']} faces")

stage1 = Pipeline(unet, sample_shape=(3, 16, 16))   # a pixel model: no autoencoder, no text
sampler, eta = make_sampler(scheduler, "ddim", S["sample_steps"], eta=1.0)  # DDIM, DDPM-like noise


def sample_grid(step: int) -> None:
    """16 samples, seeds 0..15, as sample.py would draw them from this UNet."""
    unet.eval()
    images = generate(stage1, [""] * 16, list(range(16)), 1.0, sampler, eta=eta,
                      generator=torch.Generator().manual_seed(0)).images   # (16, 3, 16, 16)
    unet.train()
    show(labelled_grid(images, [f"step {step}", ""], scale=4), f"2_stage1_step_{step:06d}")


# %%
losses, started = [], time.time()
sample_at = {S["stage1_steps"] // 2, S["stage1_steps"]}
for step in range(1, S["stage1_steps"] + 1):
    x0 = faces16[torch.randint(0, len(faces16), (S["batch"],))]         # (B, 3, 16, 16)
    t = torch.randint(0, scheduler.num_train_timesteps, (S["batch"],), device=DEVICE)  # (B,)
    noise = torch.randn_like(x0)                                        # eps ~ N(0, I)
    x_t = scheduler.add_noise(x0, noise, t)                             # [P3] closed form
    loss = scheduler.training_loss(unet(x_t, t), x0, noise, t)  # || eps - eps_theta(x_t, t) ||^2
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if step % S["log_every"] == 0:
        recent = losses[-S["log_every"]:]
        print(f"step {step:4d}  loss {sum(recent) / len(recent):.4f}  "
              f"({time.time() - started:.0f} s)")
    if step in sample_at:
        sample_grid(step)

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(range(1, len(losses) + 1), losses, lw=0.8)
ax.set(xlabel="step", ylabel="loss (MSE of eps)", yscale="log", title="stage 1, 16x16 faces")
show(fig, "2_stage1_loss")

# %% [markdown]
# ## 3. Encode, diffuse, decode
#
# Latent diffusion runs the same noising on the autoencoder's latents instead of the pixels
# ([page 12](12-latent-diffusion.md)): z_0 = encoder mean x scale_factor, which has unit variance,
# then z_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps, and the decoder turns
# z_t / scale_factor back into an image. Without `make demo`'s autoencoder, a tiny one (f = 2:
# 32x32x3 -> 16x16x3) is trained here for a couple of hundred steps with the L1 and KL losses of
# [page 11](11-training-the-autoencoder.md).

# %%
if VAE_CKPT.is_file():
    vae, scale_factor, vae_config = load_vae(VAE_CKPT, DEVICE)          # frozen, eval mode
    image_size = vae_config["image_size"]
    print(f"autoencoder: loaded from {VAE_CKPT}, scale factor {scale_factor:.3f}")
else:
    vae = AutoencoderKL(base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                        attention=False).to(DEVICE)                     # f = 2
    image_size = 32
    print(f"autoencoder: none at {VAE_CKPT}; training a tiny one for {S['vae_steps']} steps")
faces = synthetic_faces(range(S["faces"]), size=image_size).to(DEVICE)  # (N, 3, S, S)

# %%
if not VAE_CKPT.is_file():
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for step in range(1, S["vae_steps"] + 1):
        x = faces[torch.randint(0, len(faces), (S["batch"],))]          # (B, 3, 32, 32)
        x_rec, posterior = vae(x)                                       # decode(z), z ~ q(z | x)
        loss = reconstruction_loss(x, x_rec) + 1e-3 * kl_loss(posterior)  # [P11] L1 + w_kl KL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % S["log_every"] == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        z = vae.encode(faces).sample()                                  # (N, 3, 16, 16)
    scale_factor = 1 / z.std().item()  # [P12] z * scale_factor has unit variance (as latent_std)
    print(f"scale factor {scale_factor:.3f}")

# %%
shown = [0, 100, 200, 300, 500, 999]
latent_scheduler = DDPMScheduler(clip_sample=False).to(DEVICE)         # latents are not in [-1, 1]
x0 = faces[FACE:FACE + 1]                                               # (1, 3, S, S) part 1's face
with torch.no_grad():
    z0 = vae.encode(x0).mean * scale_factor                             # (1, C, h, w) [P12]
    eps_z = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    eps_x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    K = len(shown)
    t_columns = torch.tensor(shown, device=DEVICE)                      # (K,) one t per column
    z_t = latent_scheduler.add_noise(z0.expand(K, -1, -1, -1), eps_z.expand(K, -1, -1, -1),
                                     t_columns)                         # (K, C, h, w)
    decoded = vae.decode(z_t / scale_factor)                            # (K, 3, S, S)
    x_t = latent_scheduler.add_noise(x0.expand(K, -1, -1, -1), eps_x.expand(K, -1, -1, -1),
                                     t_columns)                         # (K, 3, S, S) in pixels
factor = image_size // z0.shape[-1]                                     # f
print(f"image {tuple(x0.shape[1:])} -> latent {tuple(z0.shape[1:])}; reconstruction error "
      f"(L1) {(decoded[0] - x0[0]).abs().mean():.3f}")
rows = torch.cat([x_t, upscaled(z_t / 2, factor), decoded]).cpu()       # z / 2: about [-1, 1]
show(labelled_grid(rows, ["x_t (pixels)", "z_t (3 channels)", "decode(z_t)"],
                   [f"t = {s}" for s in shown]), "3_latent_noising")

# %% [markdown]
# Pixel noise stays noise on top of the face; latent noise, decoded, is what the decoder makes of
# a latent it was never trained on: smooth colour blotches, the face dissolving into them.
#
# ## 4. One prompt's attention
#
# A text-to-image UNet reads the prompt through cross-attention: each latent position's query
# weighs the prompt's tokens, softmax(Q K^T / sqrt(d)), a row of weights that sums to 1
# ([page 16](16-cross-attention.md)). `AttentionRecorder` keeps those weights of the conditional
# branch, averaged over heads, layers and steps, as `sample.py --attention-maps` does.
#
# Without `make demo`'s text-to-image checkpoint, a tiny one is built from part 3's autoencoder, a
# text encoder with *random* weights (no CLIP), and a small UNet with cross-attention, trained for
# a couple of hundred steps on captions of the faces (10% empty, for guidance). That is far too
# little: its images are colour noise and its maps are nearly flat. They show the mechanics (the
# shapes, one map per token), not meaning; `make demo`'s model shows where words really look.

# %%
pipe = load_pipeline(LDM_CKPT, DEVICE) if LDM_CKPT.is_file() else None
if pipe is not None and pipe.text is None:
    print(f"{LDM_CKPT} is an unconditional model (train_ldm.py --clip ''): no words to look at")
    pipe = None
tiny = pipe is None                           # build and train a tiny text-to-image model here
if not tiny:
    print(f"text-to-image model: {LDM_CKPT}, trained {pipe.step} steps")
else:
    print(f"no text-to-image checkpoint at {LDM_CKPT} (`make demo` writes one): a tiny model, "
          f"random text encoder, {S['ldm_steps']} training steps; its maps are not meaningful")
    # the faces' own attributes: synthetic_faces draws face `seed` from these very ones
    attributes = [sample_attributes(random.Random(seed)) for seed in range(len(faces))]
    tokenizer = Tokenizer.build([caption(a, step_rng(0, k)) for k in range(4) for a in attributes]
                                + VALIDATION_PROMPTS)
    text_encoder = TextEncoder(len(tokenizer), tokenizer.max_length, width=32, num_layers=1,
                               num_heads=2)                             # random weights, frozen
    unet_t2i = UNet(in_channels=z0.shape[1], base_channels=32, channel_mult=(1, 2),
                    num_res_blocks=1, attention_levels=(1,), num_heads=2, context_dim=32)
    pipe = Pipeline(unet_t2i.to(DEVICE), sample_shape=tuple(z0.shape[1:]), vae=vae,
                    text=TextConditioner(text_encoder.to(DEVICE), tokenizer),
                    scale_factor=scale_factor,
                    scheduler=DDPMScheduler(clip_sample=False).to(DEVICE))  # latents: no clipping

# %%
if tiny:  # train_ldm.py's loop, cut down: captions, latents, noise, loss
    latents = pipe.encode(faces)              # (N, C, h, w): encoder mean x scale factor, once
    optimizer = torch.optim.Adam(pipe.unet.parameters(), lr=1e-3)
    for step in range(1, S["ldm_steps"] + 1):
        index = torch.randint(0, len(latents), (S["batch"],))           # (B,)
        rng = step_rng(0, step)
        prompts = ["" if rng.random() < 0.1 else caption(attributes[i], rng)  # [P16] caption
                   for i in index.tolist()]                             # dropout: 10% empty
        hidden, mask = pipe.text(prompts, DEVICE, warn_unknown=False)   # (B, L, 32), (B, L)
        z0_batch = latents[index.to(DEVICE)]                            # (B, C, h, w)
        t = torch.randint(0, pipe.scheduler.num_train_timesteps, (S["batch"],), device=DEVICE)
        noise = torch.randn_like(z0_batch)
        z_t = pipe.scheduler.add_noise(z0_batch, noise, t)              # [P12] noise the latents
        loss = pipe.scheduler.training_loss(pipe.unet(z_t, t, hidden, mask), z0_batch, noise, t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % S["log_every"] == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    pipe.unet.eval().requires_grad_(False)

# %%
PROMPT, SEED = "a photo of a smiling woman with blond hair", 0
guidance = 3.0 if tiny else pipe.config["guidance"]  # the checkpoint's own scale
sampler, eta = make_sampler(pipe.scheduler, None, S["sample_steps"])  # DDIM eta 0, or Euler (flow)
_, h, w = pipe.sample_shape
recorder = AttentionRecorder(pipe.unet, batch=1, latent_hw=(h, w))     # switches recording on
image = generate(pipe, [PROMPT], [SEED], guidance, sampler, eta=eta,
                 recorder=recorder).images                              # (1, 3, S, S)
maps = recorder.maps()                       # (1, L, h, w): mean over heads, layers and steps
recorder.close()
tokens = pipe.text.tokenizer.tokens(PROMPT)  # <bos>, the words, <eos>
share = maps[0, :len(tokens)].mean(dim=(1, 2))  # (L,) each position's weights sum to 1 over tokens
print(f"{len(recorder.layers)} cross-attention layers; maps {tuple(maps.shape)}; share per token:")
print("  " + ", ".join(f"{token} {value:.3f}" for token, value in zip(tokens, share.tolist())))
save_attention_figure(OUT / "4_attention.png", image, maps, [PROMPT], [tokens])  # as sample.py's
show_file(OUT / "4_attention.png")

# %% [markdown]
# ## 5. A guidance sweep
#
# Classifier-free guidance runs the UNet with the prompt and with the empty prompt and goes past
# the conditional prediction: eps = eps_uncond + w (eps_cond - eps_uncond). w = 1 is the plain
# conditional model; larger w follows the prompt harder, with less variety and, past some point,
# burnt colours. The same prompt and seed, so only w changes. The tiny model of part 4 has barely
# learned to read the text, so w changes its image very little (the printed differences say how
# little); `make demo`'s model shows the real effect.

# %%
sweep = [1.0, 2.0, 4.0, 7.0]
images = torch.cat([generate(pipe, [PROMPT], [SEED], w_cfg, sampler, eta=eta).images
                    for w_cfg in sweep])                                # (4, 3, S, S)
for w_cfg, image in zip(sweep[1:], images[1:]):
    print(f"w = {w_cfg:g}: mean |image - image at w = 1| = {(image - images[0]).abs().mean():.3f}")
show(labelled_grid(images, [PROMPT], [f"w = {w_cfg:g}" for w_cfg in sweep]), "5_guidance_sweep")
print(f"done in {time.time() - START:.0f} s; figures in {OUT}")
