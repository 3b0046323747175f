"""The perceptual loss: compare images by VGG16 features rather than by pixels. [P11]

The video trains its autoencoder with a perceptual loss on the first three blocks of a pretrained
VGG. An L1 or MSE loss alone gives blurry reconstructions (the average of the plausible images);
distances between deep features reward sharp edges and textures instead.

    x, y in [-1, 1] -> [0, 1] -> ImageNet normalisation -> VGG16 features[:16]
    at relu1_2, relu2_2, relu3_3 (torchvision indices 3, 8, 15), per layer l with C_l channels:
        f_hat = f / ||f||_channels                        unit feature vector at every position
        d_l   = mean over (H, W) of sum over C of (f_hat(x) - f_hat(y))^2   in [0, 4]
    loss = d_1 + d_2 + d_3                                 (B,), or its batch mean, in [0, 12]

This is LPIPS (Zhang et al. 2018, eq. 1) with every learned channel weight w_l set to 1, as its
`lpips=False` variant computes it: LPIPS learns the weights on human judgements, we weigh all
channels alike. The channels are summed, not averaged: per position
sum_C (f_hat(x) - f_hat(y))^2 = 2 - 2 cos(f(x), f(y)), so every layer's term lies in [0, 4]
whatever its width, and the three layers count equally.

Only what the loss uses is built: VGG16's `features` through relu3_3 (index 15), 7 convolutions
with 1,735,488 parameters, not the 14.7M of all its convolutions (138M with the classifier).

Weights: the VGG must come from somewhere, and tests must never download. load_vgg16_weights tries
an explicit file, then torchvision's cache, then (only if allowed) a download; without any of them
the network keeps fixed random weights (seed 0). Random convolutional features still measure local
structure (edges, textures) at three scales, but they carry none of ImageNet's learned semantics,
so the loss is weaker: state which one you trained with.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's IMAGENET1K_V1 weights, as the hub cache names them
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's VGG16 configuration "D": conv widths, "M" = 2x2 max-pool; `features` has 31 layers
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
FEATURE_LAYERS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3: the ends of blocks 1, 2, 3


class VGG16Features(nn.Module):
    """The start of torchvision's `vgg16().features`, written out: its layers up to and including
    the last requested one, at torchvision's indices. For FEATURE_LAYERS that is layers 0-15
    (conv 0,2 / pool 4 / conv 5,7 / pool 9 / conv 10,12,14, each conv followed by its ReLU), 7 of
    VGG16's 13 convolutions: 1,735,488 parameters instead of 14,714,688. The indices are
    torchvision's, so the `features.0-14.*` entries of a torchvision VGG16 state dict load
    unchanged; the rest of the file (blocks 4 and 5, the classifier) is not needed."""

    def __init__(self, layers: tuple = FEATURE_LAYERS):  # indices whose outputs forward returns
        super().__init__()
        self.layers = tuple(layers)
        last = max(self.layers)
        modules, channels = [], 3
        for width in VGG16_LAYOUT:
            if width == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
            if len(modules) > last:
                break
        if len(modules) <= last:
            raise ValueError(f"VGG16's features have {len(modules)} layers, no layer {last}")
        self.features = nn.Sequential(*modules[:last + 1])  # layers 0..last, torchvision's indices

    def reset_parameters(self, seed: int = 0) -> "VGG16Features":
        """Fixed random weights: Kaiming normal (fan_out, ReLU) convs and zero biases, as
        torchvision initialises VGG, drawn from a CPU generator seeded with `seed`, layer by layer
        in order: each built layer gets the same draws as when all of VGG16 was built."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    weight = torch.empty(module.weight.shape)
                    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu",
                                            generator=generator)
                    module.weight.copy_(weight)
                    module.bias.zero_()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W), ImageNet-normalised -> the activations at self.layers, in order:
        relu1_2 (B, 64, H, W), relu2_2 (B, 128, H/2, W/2), relu3_3 (B, 256, H/4, W/4)."""
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layers:
                outputs.append(x)
        return outputs


def normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """f (B, C, H, W) -> each position's feature vector divided by its L2 norm over C (LPIPS).
    LPIPS divides by (norm + eps), F.normalize by max(norm, eps): the same for any norm above
    1e-10, and F.normalize's gradient stays finite where a position's features are all 0."""
    return F.normalize(f, p=2.0, dim=1, eps=eps)                  # (B, C, H, W), unit vectors over C


class PerceptualLoss(nn.Module):
    """d(x, y) between images in [-1, 1]: LPIPS with uniform weights on VGG16 relu1_2, relu2_2,
    relu3_3 (module docstring). Frozen: no parameter needs a gradient, always in eval mode;
    gradients still flow to the images."""

    def __init__(self, vgg_state_dict: dict | None = None):  # None: fixed random weights (seed 0)
        super().__init__()
        self.vgg = VGG16Features()
        if vgg_state_dict is None:
            self.vgg.reset_parameters(seed=0)
        else:
            self.vgg.load_state_dict(vgg_state_dict, strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # a fixed measuring device: stays in eval mode

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """x, y (B, 3, H, W) in [-1, 1] -> scalar (reduction="mean") or (B,) ("none")."""
        x = ((x + 1) / 2 - self.mean) / self.std                  # [-1, 1] -> [0, 1] -> ImageNet-normalised
        y = ((y + 1) / 2 - self.mean) / self.std
        distance = 0.0
        for fx, fy in zip(self.vgg(x), self.vgg(y)):              # (B, C_l, H_l, W_l) per layer
            squared = (normalize_channels(fx) - normalize_channels(fy)) ** 2
            distance = distance + squared.sum(dim=1).mean(dim=(1, 2))  # (B,): sum over C, mean over H, W
        if reduction == "none":
            return distance
        if reduction == "mean":
            return distance.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def load_vgg16_weights(path: str | Path | None = None, allow_download: bool = False
                       ) -> tuple[dict | None, str]:
    """ImageNet VGG16 weights of the layers VGG16Features builds (`features.0-14.*`), and where
    they came from (one phrase), or None.

    Tried in order:
      (a) `path`, if given (--vgg-weights FILE): a torchvision VGG16 state dict, or one holding only
          its `features.*` entries. A missing file, or a needed entry missing or of the wrong
          shape, raises CheckpointError.
      (b) torchvision's cache, torch.hub.get_dir()/checkpoints/vgg16-397923af.pth.
      (c) only if allow_download: torchvision's IMAGENET1K_V1 URL, saved into that cache and
          loaded with weights_only=True after a hash check; any failure (offline) falls through.
      (d) nothing: (None, a sentence saying so). PerceptualLoss(None) then uses fixed random weights.
    Only the entries of the built layers are kept: blocks 4 and 5 and `classifier.*` are ignored.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"--vgg-weights: no file at {path}")
        return _entries_used(_read(path), path), f"VGG16 with ImageNet weights from {path}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    if cached.is_file():
        return _entries_used(_read(cached), cached), f"VGG16 with ImageNet weights from {cached}"
    if allow_download:
        try:
            import torchvision
            url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
            # weights_only: the file cannot run code; check_hash: its SHA-256 must start with
            # the 397923af in its name, so a tampered or truncated download is refused
            state_dict = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True,
                                                            check_hash=True, weights_only=True)
            return _entries_used(state_dict, url), f"VGG16 with ImageNet weights from {url}"
        except Exception as error:  # offline, no torchvision, a broken file: use the fallback
            reason = f"download failed: {type(error).__name__}"
    else:
        reason = "offline?"
    return None, (f"no ImageNet VGG16 weights found ({reason}): using a VGG16 with fixed random "
                  f"weights, which compares edges and textures but not learned features; pass "
                  f"--vgg-weights FILE for the real ones (see README)")


def _read(path: Path) -> dict:
    """torch.load with weights_only=True (tensors only, no code), any failure as one CheckpointError."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read {path} as a state dict: {type(error).__name__}") from error
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path} holds a {type(state_dict).__name__}, not a state dict")
    return state_dict


def _entries_used(state_dict: dict, source) -> dict:
    """The entries of a torchvision VGG16 state dict that VGG16Features loads (`features.0-14.*`);
    the others (blocks 4 and 5, `classifier.*`) are dropped. CheckpointError, naming the first
    entry at fault, when a needed one is missing or has the wrong shape."""
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        expected = {k: v.shape for k, v in VGG16Features().state_dict().items()}
    missing = [key for key in expected if key not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source} is not a torchvision VGG16 state dict: it has no "
                              f"{missing[0]}{more}")
    for key, shape in expected.items():
        found = getattr(state_dict[key], "shape", None)              # None: not a tensor at all
        if found != shape:
            raise CheckpointError(f"{source} is not a torchvision VGG16 state dict: {key} has shape "
                                  f"{None if found is None else tuple(found)}, VGG16 needs {tuple(shape)}")
    return {key: state_dict[key] for key in expected}


def build_perceptual_loss(weights_path: str | Path | None = None, allow_download: bool = False
                          ) -> tuple[PerceptualLoss, str]:
    """(PerceptualLoss, one sentence to print once saying which VGG16 weights it uses)."""
    state_dict, description = load_vgg16_weights(weights_path, allow_download)
    return PerceptualLoss(state_dict), f"perceptual loss: {description}"
