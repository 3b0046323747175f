"""Image-quality metrics: PSNR and SSIM of reconstructions (on images in [-1, 1]), the Frechet
distance, and what the judge of evaluate.py reads from images: attribute preservation and diversity.

PSNR and SSIM are computed on the [0, 1] scale, the convention of most papers, so the numbers
compare.
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


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, the FID
    formula, here in any feature space):

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    Tr (sigma1 sigma2)^(1/2) = sum of sqrt(eigenvalues of sigma1^(1/2) sigma2 sigma1^(1/2)), a
    symmetric PSD matrix, so float64 eigendecompositions suffice (no general matrix sqrt)."""
    mu1, mu2, sigma1, sigma2 = (a.double() for a in (mu1, mu2, sigma1, sigma2))
    values, vectors = torch.linalg.eigh(sigma1)
    sqrt1 = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T   # sigma1^(1/2)
    middle = torch.linalg.eigvalsh(sqrt1 @ sigma2 @ sqrt1).clamp(min=0)
    return ((mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace()
            - 2 * middle.sqrt().sum()).item()


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), in float64."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def frechet_distance_spread(features_a: torch.Tensor, features_b: torch.Tensor, rounds: int = 100,
                            seed: int = 0) -> float:
    """Bootstrap standard deviation of frechet_distance between two feature sets (N_a, D) and
    (N_b, D): both sets are redrawn with replacement `rounds` times (Efron 1979). Two distances
    that differ by less than about twice this are within the noise of the sample size."""
    generator = torch.Generator().manual_seed(seed)
    distances = []
    for _ in range(rounds):
        a = features_a[torch.randint(len(features_a), (len(features_a),), generator=generator)]
        b = features_b[torch.randint(len(features_b), (len(features_b),), generator=generator)]
        distances.append(frechet_distance(*feature_statistics(a), *feature_statistics(b)))
    return torch.tensor(distances).std().item()


def attribute_preservation(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """Judge probabilities (N, A) of originals and of their reconstructions -> (A,): the share of
    images whose reconstruction the judge reads the same way as the original (present or absent,
    at p = 0.5). 1.0 means the autoencoder kept what the judge can see of every attribute."""
    return ((original > 0.5) == (reconstructed > 0.5)).float().mean(0)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """(N, D) features -> the mean Euclidean distance over the N (N - 1) / 2 distinct pairs."""
    return torch.pdist(features.double()).mean().item()


def diversity_ratio(generated: torch.Tensor, real: torch.Tensor) -> float:
    """How diverse a prompt's images are, relative to real images with the same attributes:
    mean pairwise distance of the generated features (N, D) over that of the real ones (M, D).
    About 1 when both are draws from the same distribution; 0 for N copies of one image."""
    return mean_pairwise_distance(generated) / mean_pairwise_distance(real)
