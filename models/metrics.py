"""Image-quality metrics for reconstructions: PSNR and SSIM, on images in [-1, 1].

Both are computed on the [0, 1] scale, the convention of most papers, so the numbers compare.
"""

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, (B,) in dB: 10 log10(1 / MSE) on the [0, 1] scale."""
    mse = ((x.float() - y.float()) / 2).pow(2).flatten(1).mean(dim=1)  # (B,), [-1,1] -> [0,1]
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size), sums to 1


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image, (B,) (Wang et al. 2004): local means, variances and
    covariance under an 11x11 Gaussian window (sigma 1.5), per channel, averaged over the valid
    positions and the channels:

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
        C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 1 (the [0, 1] range)
    """
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2  # (B, C, H, W) in [0, 1]
    C = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x.device).expand(C, 1, window_size, window_size)

    def blur(z):  # the Gaussian-weighted local mean of each channel, (B, C, H-10, W-10)
        return F.conv2d(z, window, groups=C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
                / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    return ssim_map.flatten(1).mean(dim=1)  # (B,)
