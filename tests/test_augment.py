"""Augmentation: identity at zero strength, each transform alone against its closed form, seeds,
and the MPS-safe reflection against grid_sample's own padding_mode="reflection"."""

import math

import pytest
import torch
import torch.nn.functional as F

from data.augment import augment, grid_sample_reflection

OFF = dict(flip=0.0, max_rotation_deg=0.0, brightness=0.0, contrast=0.0)


def images(B=8, H=16, W=16, seed=0):
    """A batch of random images in [-1, 1]."""
    return torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def drawn(B, seed, which, low, high):
    """The `which`-th parameter vector augment draws from a generator seeded with `seed`
    (order: flip, angle, brightness, contrast), mapped to U(low, high)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(which):
        torch.rand(B, generator=generator)
    return low + (high - low) * torch.rand(B, generator=generator)


def test_all_strengths_zero_is_the_identity():
    x = images()
    assert torch.equal(augment(x, **OFF), x)


def test_flip_only_is_a_width_flip():
    x = images()
    assert torch.equal(augment(x, **{**OFF, "flip": 1.0}), torch.flip(x, dims=[3]))


def test_flip_half_flips_exactly_the_drawn_samples():
    x = images(B=64)
    out = augment(x, torch.Generator().manual_seed(3), **{**OFF, "flip": 0.5})
    flipped = drawn(64, 3, 0, 0.0, 1.0) < 0.5
    assert torch.equal(out[flipped], x[flipped].flip(3)) and torch.equal(out[~flipped], x[~flipped])
    assert 10 < flipped.sum() < 54


def test_rotation_keeps_shape_range_and_the_centre_pixel():
    x = images(B=4, H=9, W=9)  # odd size: the centre pixel is the centre of rotation
    out = augment(x, **{**OFF, "max_rotation_deg": 30.0})
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert torch.allclose(out[:, :, 4, 4], x[:, :, 4, 4], atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-2)
    grey = torch.full((2, 3, 12, 20), 0.25)  # a constant image stays constant (reflection padding)
    assert torch.allclose(augment(grey, **{**OFF, "max_rotation_deg": 30.0}), grey, atol=1e-6)


def test_rotation_near_90_degrees_is_a_quarter_turn():
    # The first seed whose drawn angle is within 0.5 degree of +90: the result is a quarter turn.
    seed = next(s for s in range(100_000) if drawn(1, s, 1, -90.0, 90.0) > 89.5)
    x = images(B=1, H=8, W=8)
    out = augment(x, torch.Generator().manual_seed(seed), **{**OFF, "max_rotation_deg": 90.0})
    assert (out - torch.rot90(x, 1, dims=(2, 3))).abs().mean() < 0.05  # counter-clockwise


def test_rotation_is_a_rotation_in_pixels_on_non_square_images():
    H, W = 40, 80
    y = torch.arange(H)[:, None] + 0.5 - H / 2  # (H, 1) pixel centres about the image centre
    x = torch.arange(W)[None, :] + 0.5 - W / 2  # (1, W)
    disk = torch.where(x**2 + y**2 < 12**2, 1.0, -1.0).expand(4, 3, H, W)  # a centred disk
    out = augment(disk, torch.Generator().manual_seed(0), **{**OFF, "max_rotation_deg": 45.0})
    assert (out - disk).abs().mean() < 0.03  # stays a disk (not an ellipse) whatever the angle


def test_brightness_shifts_the_mean_by_the_drawn_amount():
    x = torch.zeros(16, 3, 8, 8)  # mid-grey: no clamping for shifts up to 1
    out = augment(x, torch.Generator().manual_seed(1), **{**OFF, "brightness": 0.2})
    b = drawn(16, 1, 2, -0.2, 0.2)  # in [0, 1] units, so 2 b in [-1, 1] units
    assert torch.allclose(out.mean(dim=(1, 2, 3)), 2 * b, atol=1e-6)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))  # the same shift everywhere


def test_contrast_keeps_the_mean_and_scales_the_std():
    x = images(B=16) * 0.5  # in [-0.5, 0.5]: no clamping for factors up to 1.5
    out = augment(x, torch.Generator().manual_seed(2), **{**OFF, "contrast": 0.3})
    c = drawn(16, 2, 3, 0.7, 1.3)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(out.std(dim=(1, 2, 3)), c * x.std(dim=(1, 2, 3)), atol=1e-5)


def test_output_stays_in_range_at_full_strength():
    out = augment(images(B=32), flip=0.5, max_rotation_deg=45.0, brightness=0.5, contrast=0.5)
    assert out.min() >= -1 and out.max() <= 1


def test_determinism_under_the_global_seed_and_a_generator():
    x = images()
    torch.manual_seed(123)
    first = augment(x)
    torch.manual_seed(123)
    assert torch.equal(augment(x), first)
    assert not torch.equal(augment(x), first)  # the global RNG moved on
    same = [augment(x, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(same[0], same[1])


def test_each_sample_gets_its_own_parameters():
    x = images(B=1).expand(8, -1, -1, -1)  # eight copies of one image
    out = augment(x, torch.Generator().manual_seed(0))
    distinct = {tuple(out[i].flatten()[:20].tolist()) for i in range(8)}
    assert len(distinct) == 8


def rotation_grid(B, H, W, angle_deg, scale=1.0):
    """affine_grid for a rotation by angle_deg (in pixels, as augment builds it), zoomed out by
    `scale` so that the points reach further outside the frame: (B, H, W, 2)."""
    angle = torch.full((B,), angle_deg * math.pi / 180)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(B)
    theta = torch.stack([torch.stack([cos, -sin * H / W, zero], dim=1),
                         torch.stack([sin * W / H, cos, zero], dim=1)], dim=1)  # (B, 2, 3)
    return F.affine_grid(theta * scale, [B, 3, H, W], align_corners=False)


def sampling_grids(B, H, W, seed):
    """Rotations from 0 to 170 degrees, zoomed out up to 3.5 times (reflected more than once), and
    random points in [-7, 7]."""
    grids = [rotation_grid(B, H, W, angle, scale)
             for angle in (0.0, 10.0, 45.0, 90.0, 170.0) for scale in (1.0, 1.5, 3.5)]
    random = torch.rand(B, H, W, 2, generator=torch.Generator().manual_seed(seed)) * 14 - 7
    return grids + [random]


def reflection_padded(x, grid):
    """The old augment's sampling: grid_sample with its own reflection padding (no MPS kernel
    before torch 2.13)."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@pytest.mark.parametrize("H, W", [(8, 8), (32, 32), (16, 64), (64, 32)])
def test_the_mps_safe_reflection_is_grid_samples_reflection_bit_for_bit(H, W):
    """At power-of-two sizes (the defaults: 32, 64, 128) the reflection by hand, sampled
    with padding_mode="zeros", gives every output pixel bit for bit: in-frame pixels (their source
    point inside the image, |g| <= 1 on both axes, the outer half-pixel ring that grid_sample
    clamps to the edge pixel included) and out-of-frame ones, mirrored once or several times."""
    x = images(B=3, H=H, W=W, seed=H + W)
    for grid in sampling_grids(3, H, W, seed=H * W):
        assert torch.equal(grid_sample_reflection(x, grid), reflection_padded(x, grid))
    reach = torch.stack([g.abs().max() for g in sampling_grids(3, H, W, seed=H * W)])
    assert (reach <= 1).any() and (reach > 3).any()  # in the frame only, and reflected twice


@pytest.mark.parametrize("H, W", [(9, 9), (12, 20), (40, 80)])
def test_the_mps_safe_reflection_at_other_sizes_is_within_float32_rounding(H, W):
    """At other sizes W/2 is not a power of two: grid_sample's CPU kernel can compute the pixel
    coordinate u = (g + 1) W/2 - 1/2 with one fused multiply-add, and its reflection adds and
    removes half a pixel, rounding u again even inside the frame (so there even its own "border"
    padding differs from its "reflection" in-frame); the reflection by hand rounds differently.
    The results stay within one float32 ulp of the largest pixel coordinate, (max|g| + 1)
    max(H, W) / 2, times the steepest step between neighbouring pixels (2) per axis."""
    x = images(B=3, H=H, W=W, seed=H + W)
    for grid in sampling_grids(3, H, W, seed=H * W):
        tolerance = torch.finfo(torch.float32).eps * (grid.abs().max() + 1) * max(H, W)
        difference = (grid_sample_reflection(x, grid) - reflection_padded(x, grid)).abs().max()
        assert difference <= tolerance


@pytest.mark.parametrize("H, W", [(32, 32), (16, 64)])
def test_rotation_gives_the_images_of_grid_samples_reflection_padding(H, W):
    """augment's rotation, against the old one (grid_sample's reflection padding) at the angles it
    draws: the same images bit for bit, the pixels whose source lies outside the frame included."""
    x = images(B=16, H=H, W=W, seed=7)
    out = augment(x, torch.Generator().manual_seed(4), **{**OFF, "max_rotation_deg": 60.0})
    angle = drawn(16, 4, 1, -60.0, 60.0) * (math.pi / 180)  # (B,) radians, as augment draws them
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros(16)
    theta = torch.stack([torch.stack([cos, -sin * H / W, zero], dim=1),
                         torch.stack([sin * W / H, cos, zero], dim=1)], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    assert (grid.abs() > 1).any()  # some pixels come from outside the frame
    assert torch.equal(out, reflection_padded(x, grid).clamp(-1, 1))
