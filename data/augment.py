"""Random augmentation of a batch of images on its own device: flip, rotation, brightness, contrast.

[P6] augmentation as in the video's training loop: "we load in a batch of images, apply some
augmentation to it like random rotations, flipping, adjusting the brightness and contrast".

Every sample gets its own parameters, drawn with torch in a fixed order (flip, angle, brightness,
contrast; one torch.rand(B) each, always all four) on the generator's device, or with the global
CPU generator when none is given, so that restoring torch's RNG state resumes training exactly.
The four go to the images' device as one (4, B) tensor: one copy per batch, not four.

The rotation mirrors the image at its borders (grid_sample's padding_mode="reflection"), but it
reflects the sampling points by hand and calls grid_sample with padding_mode="zeros": on MPS, torch
before 2.13 is reported to raise for "reflection" and "border" (pytorch/pytorch#125098), and one
path on every device keeps CPU, CUDA and MPS computing the same thing.
"""

import math

import torch
import torch.nn.functional as F

from common.device import to_device


def reflect_into_frame(
    coordinate: torch.Tensor,  # (...) one axis of a grid_sample grid, normalised: frame edges at -1, 1
    size: int,                 # pixels along that axis
) -> torch.Tensor:
    """grid_sample's reflection padding (align_corners=False) of one axis, by hand: mirror the
    point at the frame's edges until it lands inside, then keep it between the outermost pixel
    centres, -1 + 1/size and 1 - 1/size, as grid_sample does, so that zeros padding never shows."""
    distance = (coordinate + 1).abs() % 4             # from the low edge; reflection has period 4
    distance = torch.minimum(distance, 4 - distance)  # mirrored at the high edge: [0, 2]
    # A point inside the frame comes back as (g + 1) - 1, which grid_sample turns into g + 1 again,
    # exactly the float it computes from g itself: it samples the very same place.
    return (distance - 1).clamp(-1 + 1 / size, 1 - 1 / size)


def grid_sample_reflection(
    x: torch.Tensor,     # (B, C, H, W) images
    grid: torch.Tensor,  # (B, H_out, W_out, 2) normalised (x, y) sampling points, any range
) -> torch.Tensor:
    """F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    through padding_mode="zeros", which every device supports. Bit for bit the same on the CPU
    when H and W are powers of two; at other sizes the pixel coordinates round differently, a
    few float32 ulps apart."""
    H, W = x.shape[2], x.shape[3]
    reflected = torch.stack(
        [reflect_into_frame(grid[..., 0], W), reflect_into_frame(grid[..., 1], H)], dim=-1
    )  # (B, H_out, W_out, 2), every point between the outermost pixel centres
    return F.grid_sample(x, reflected, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(
    x: torch.Tensor,                           # (B, 3, H, W) images in [-1, 1]
    generator: torch.Generator | None = None,  # None: torch's global (CPU) generator
    flip: float = 0.5,                         # probability of a horizontal flip
    max_rotation_deg: float = 10.0,            # angle ~ U(-max, max) degrees; + counter-clockwise
    brightness: float = 0.1,                   # add b ~ U(-brightness, brightness), [0, 1] units
    contrast: float = 0.1,                     # (x - mean) * c, c ~ U(1 - contrast, 1 + contrast)
) -> torch.Tensor:
    """Augment each image of a batch with its own random parameters; all strengths 0: identity."""
    # [P6] augmentation as in the video's training loop
    B, _, H, W = x.shape
    draw_device = generator.device if generator is not None else torch.device("cpu")
    bounds = [(0.0, 1.0), (-max_rotation_deg, max_rotation_deg), (-brightness, brightness),
              (1 - contrast, 1 + contrast)]  # flip, angle, brightness, contrast
    draws = [torch.rand(B, generator=generator, device=draw_device) for _ in bounds]  # 4 x (B,)
    # u ~ U(0, 1) -> U(low, high), then one copy of all four to x's device, not four
    params = to_device(torch.stack([low + (high - low) * u for (low, high), u in zip(bounds, draws)]),
                       x.device)  # (4, B) float32

    flip_mask = params[0] < flip  # (B,) bool
    angle = params[1] * (math.pi / 180)  # (B,) radians
    shift = (params[2] * 2).to(x.dtype)  # (B,) twice b: [-1, 1] units
    scale = params[3].to(x.dtype)  # (B,)

    if flip > 0:
        x = torch.where(flip_mask[:, None, None, None], x.flip(3), x)
    if max_rotation_deg > 0:
        # affine_grid maps output to input coordinates, normalised to [-1, 1] on each axis; rotating
        # by angle in pixels means scaling the off-diagonal terms by the aspect ratio.
        cos, sin = torch.cos(angle), torch.sin(angle)  # (B,)
        zero = torch.zeros_like(angle)
        theta = torch.stack(
            [
                torch.stack([cos, -sin * H / W, zero], dim=1),
                torch.stack([sin * W / H, cos, zero], dim=1),
            ],
            dim=1,
        ).to(x.dtype)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        x = grid_sample_reflection(x, grid)  # mirrored at the borders
    if brightness > 0:
        x = x + shift[:, None, None, None]
    if contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (x - mean) * scale[:, None, None, None] + mean
    return x.clamp(-1.0, 1.0)
