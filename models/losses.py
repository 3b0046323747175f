"""The losses of the autoencoder stage, one small function each. [P11]

The training script adds them in one visible line, as latent diffusion does (LDM's
`LPIPSWithDiscriminator`, after the VQGAN loss of Esser et al. 2021, eq. 6):

    autoencoder step:    L_AE = reconstruction_loss + w_p * perceptual + w_kl * kl_loss
                                + lambda * w_gan * generator_loss        (lambda = adaptive_gan_weight)
    discriminator step:  L_D  = hinge_d_loss(D(x), D(x_rec.detach()))

Reductions, one convention for all: every term is a MEAN over its elements (pixels for the
reconstruction, positions for the perceptual loss, latent elements for the KL) and over the batch.
The numbers are then readable (an L1 of 0.05 is 0.05 per pixel on a [-1, 1] scale) and do not
change with the image size. LDM instead SUMS the reconstruction over the 3*H*W pixels and the KL
over the C*h*w latent elements of each image (and averages over the batch); dividing its loss by
3*H*W gives ours, with

    w_kl (ours, per-element means) = w_kl (LDM, per-image sums) * (C*h*w) / (3*H*W)
                                   = w_kl (LDM) * C / (3 f^2)           (f = downsampling factor)

so LDM's 1e-6 for its f=4, C=3 autoencoder is 6.25e-8 here: see kl_weight_note.

Choosing w_kl (our units). Measured on CPU: 32x32 synthetic faces, AutoencoderKL(base_channels=32,
channel_mult=(1, 2, 2), num_res_blocks=1, attention=False), batch 16, Adam 1e-3, L1 + w_kl * KL,
on 64 held-out faces:

    w_kl                         latent std   posterior sigma   PSNR of the mean
    0, 6.25e-8 (LDM's), 1e-6     2.1 - 2.2    0.017 - 0.020     21.9 - 22.1 dB    (400 steps)
    1e-4                         1.9          0.028             22.0
    1e-3                         1.5          0.088             21.8
    1e-2                         1.0          0.35              20.1  (-1.8 dB: too strong)
    1e-6 / 1e-3, 1500 steps      2.4 / 1.5    0.004 / 0.068     24.6 / 24.8 dB

Up to 1e-3 the PSNR does not move (differences within run-to-run noise); the KL only sets how large
the latents get and how much noise the posterior keeps. At LDM's weight and below, the latents keep
growing and the posterior collapses to a point (no KL at all behaves the same); at 1e-3 their scale
stays put. With the perceptual loss added (weight 1, P about 0.25 after 400 steps) the picture is
the same: 1e-6 vs. 1e-3 give 21.2 vs. 21.1 dB, latent std 1.9 vs. 1.7.
"""

import torch
import torch.nn.functional as F


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """Mean absolute error |x - x_rec| over pixels and batch (L1, as in LDM: sharper than L2)."""
    return F.l1_loss(x_rec, x)


def kl_loss(posterior) -> torch.Tensor:
    """KL(q(z | x) || N(0, I)), MEAN over the latent elements and the batch: a scalar.

    posterior.kl() is the closed form summed over (C, h, w) of each image (models/vae.py); we divide
    by C*h*w. LDM reports the per-image SUM instead (torch.sum(kl) / batch): multiply by C*h*w to
    compare. Its role is to keep the latents bounded, not to make them N(0, I): the weight is very
    small, and the latents are rescaled to unit variance before diffusion anyway (Rombach et al.
    2022, section 3.1, "KL-reg."; the scale_factor of their code)."""
    return posterior.kl().mean() / posterior.mean[0].numel()


def kl_weight_note(kl_weight: float, latent_channels: int, downsampling_factor: int,
                   image_channels: int = 3) -> str:
    """One line the training script can print: our KL weight in LDM's units (module docstring)."""
    ldm_weight = kl_weight * image_channels * downsampling_factor ** 2 / latent_channels
    return (f"KL weight {kl_weight:g} on per-element means = {ldm_weight:g} on LDM's per-image "
            f"sums (its autoencoders use 1e-6)")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017; LDM's hinge_d_loss), a scalar:
        L_D = 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))
    Zero once real patches score >= 1 and reconstructed ones <= -1; 1 when D outputs all 0."""
    loss_real = torch.mean(F.relu(1.0 - logits_real))
    loss_fake = torch.mean(F.relu(1.0 + logits_fake))
    return 0.5 * (loss_real + loss_fake)


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The autoencoder's adversarial loss, -mean(D(x_rec)): make reconstructions look real to D
    (the generator side of the hinge GAN, as in LDM)."""
    return -torch.mean(logits_fake)


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """lambda = ||grad_{last_layer} L_rec|| / (||grad_{last_layer} L_G|| + 1e-4), clamped to
    [0, max_weight] and detached (Esser et al. 2021, VQGAN eq. 7; LDM's calculate_adaptive_weight).

    The GAN loss then pushes the decoder's last layer as hard as the reconstruction loss does,
    whatever their scales. rec_loss is everything but the GAN term (L1 + perceptual in LDM);
    last_layer is AutoencoderKL.last_layer. Both graphs are kept (retain_graph) for the backward."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(rec_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, max_weight).detach()
