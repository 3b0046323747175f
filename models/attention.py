"""Attention over token sequences, and the spatial wrapper the UNet uses on its feature maps.

`Attention` is multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1)

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

with separate linear projections for the queries, keys and values (as in CompVis latent-diffusion
`ldm/modules/attention.py`). Queries always come from the sequence x; keys and values come from x
itself (self-attention) or from a second sequence, the context. With a context of text hidden
states this is the cross-attention of point 16: the image tokens ask, the text tokens answer, and
the output keeps the image's shape. An optional key padding mask removes padding tokens of the
context from the softmax.

`SpatialSelfAttention` lets the image features attend to each other: (B, C, H, W) feature map ->
H*W tokens of width C -> self-attention -> back to (B, C, H, W), added to the input. [P5]

`SpatialTransformer` is the text-conditioned version (latent diffusion's SpatialTransformer,
Rombach et al. 2022, section 3.3): the H*W image tokens go through a transformer block of
self-attention, cross-attention to the text tokens, and a feed-forward layer, each pre-norm with
a residual, and come back to (B, C, H, W). [P16]
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention_weights(q: torch.Tensor, k: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) written out: q (B, heads, L, d), k (B, heads, L_ctx, d), mask
    broadcastable to (B, heads, L, L_ctx), bool, True = keep -> (B, heads, L, L_ctx), rows sum to 1.
    The same weights F.scaled_dot_product_attention applies inside its fused kernel."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])              # (B, heads, L, L_ctx)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


class Attention(nn.Module):
    """Multi-head attention: tokens x (B, L, D) attend to a context (B, L_ctx, D_ctx) or to x."""

    def __init__(self,
        query_dim: int,                     # D, width of the tokens x and of the output
        context_dim: int | None = None,     # D_ctx of the context tokens; None = self-attention
        num_heads: int = 4,                 # heads of width d = D / num_heads; must divide D
    ):
        super().__init__()
        if query_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide the attention width {query_dim}")
        context_dim = query_dim if context_dim is None else context_dim
        self.num_heads = num_heads
        self.head_dim = query_dim // num_heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)
        self.record = False        # True: also keep softmax(q k^T / sqrt d) in last_weights
        self.last_weights = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D); context (B, L_ctx, D_ctx) or None for x itself;
        mask (B, L_ctx) bool, True = keep this key, False = padding that gets no weight.
        Keep at least one key per sample: with none the result depends on the kernel (zeros or NaN)."""
        context = x if context is None else context
        B, L, D = x.shape
        L_ctx = context.shape[1]
        heads, d = self.num_heads, self.head_dim
        # project, then split the width into heads
        q = self.to_q(x).reshape(B, L, heads, d).transpose(1, 2)            # (B, heads, L, d)
        k = self.to_k(context).reshape(B, L_ctx, heads, d).transpose(1, 2)  # (B, heads, L_ctx, d)
        v = self.to_v(context).reshape(B, L_ctx, heads, d).transpose(1, 2)  # (B, heads, L_ctx, d)
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != (B, L_ctx):
                raise ValueError(f"mask must be a bool tensor of shape {(B, L_ctx)} (True = keep), "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            # SDPA's bool mask: True = may attend. Broadcast over heads and queries.
            mask = mask[:, None, None, :]                                   # (B, 1, 1, L_ctx)
        if self.record:  # the weights written out, kept for inspection; the output below is
            # still the fused kernel's, so recording does not change the image by a single bit
            self.last_weights = attention_weights(q, k, mask).detach()      # (B, heads, L, L_ctx)
        # softmax(q k^T / sqrt(d)) v, by PyTorch's fused kernel
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)       # (B, heads, L, d)
        out = out.transpose(1, 2).reshape(B, L, D)                          # (B, L, heads * d = D)
        return self.to_out(out)                                             # (B, L, D)


class SpatialSelfAttention(nn.Module):
    """Self-attention between the H*W positions of a feature map, with a residual connection."""

    def __init__(self,
        channels: int,                      # C, channels of the feature map (= token width)
        num_heads: int = 4,                 # attention heads; must divide channels
        num_groups: int = 32,               # GroupNorm groups; must divide channels
    ):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.attention = Attention(channels, num_heads=num_heads)
        # Output projection starts at zero: the block begins as the identity, x + 0.
        nn.init.zeros_(self.attention.to_out.weight)
        nn.init.zeros_(self.attention.to_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)          # (B, H*W, C) one token per position
        tokens = self.attention(tokens)                           # (B, H*W, C)
        return x + tokens.transpose(1, 2).reshape(B, C, H, W)     # (B, C, H, W) residual


class FeedForward(nn.Module):
    """Position-wise MLP with a GEGLU gate (Shazeer 2020), as in latent diffusion's transformer:
    x -> (x W1) * GELU(x W2) -> W3, hidden width 4 x D."""

    def __init__(self, width: int, mult: int = 4):
        super().__init__()
        self.gate_in = nn.Linear(width, 2 * mult * width)
        self.out = nn.Linear(mult * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.gate_in(x).chunk(2, dim=-1)            # (B, L, 4D) each
        return self.out(value * F.gelu(gate))                     # (B, L, D)


class CrossAttentionBlock(nn.Module):
    """Image tokens (B, L, D) and text tokens (B, L_ctx, D_ctx) -> image tokens (B, L, D): [P16]

        x = x + SelfAttention(LN(x))                  image tokens read each other
        x = x + CrossAttention(LN(x), text, mask)     image tokens (queries) read the text (keys, values)
        x = x + FeedForward(LN(x))
    """

    def __init__(self, width: int, context_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attention = Attention(width, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attention = Attention(width, context_dim=context_dim, num_heads=num_heads)
        self.norm3 = nn.LayerNorm(width)
        self.feed_forward = FeedForward(width)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attention(self.norm1(x))                                # (B, L, D)
        x = x + self.cross_attention(self.norm2(x), context, mask=context_mask)   # (B, L, D)
        return x + self.feed_forward(self.norm3(x))                               # (B, L, D)


class SpatialTransformer(nn.Module):
    """A feature map attends to itself and to the text: (B, C, H, W) -> (B, C, H, W). [P16]

    GroupNorm, 1x1 projection in, H*W tokens through a CrossAttentionBlock, projection out
    (zero-initialised, so the block starts as the identity), plus the input."""

    def __init__(self, channels: int, context_dim: int, num_heads: int = 4, num_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)
        self.proj_in = nn.Linear(channels, channels)
        self.block = CrossAttentionBlock(channels, context_dim, num_heads)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))   # (B, H*W, C) one per position
        tokens = self.block(tokens, context, context_mask)              # (B, H*W, C)
        tokens = self.proj_out(tokens)                                  # (B, H*W, C)
        return x + tokens.transpose(1, 2).reshape(B, C, H, W)           # (B, C, H, W) residual


class AttentionRecorder:
    """Where each word looks: the cross-attention weights of the conditional branch, averaged over
    heads, layers and sampling steps, per image position and text token, at the latent
    resolution. [P16]

        recorder = AttentionRecorder(unet, batch=B, latent_hw=(h, w))   # switches recording on
        ...after every model call: recorder.collect(rows)                # the conditional rows
        maps = recorder.maps()                                           # (B, L, h, w)
        recorder.close()                                                 # stops keeping weights

    keep_calls: the indices of the model calls (0 = the first sampling step) whose maps are also
    kept one by one, for step_maps(): where each word looks at one step.
    """

    def __init__(self, unet: nn.Module, batch: int, latent_hw: tuple[int, int],
                 keep_calls=()):
        self.layers = [m.block.cross_attention for m in unet.modules()
                       if isinstance(m, SpatialTransformer)]
        for layer in self.layers:
            layer.record = True   # keep the weights (the output is unchanged)
        self.batch, self.latent_hw, self.total, self.count = batch, latent_hw, None, 0
        self.keep_calls, self.calls, self.kept = set(keep_calls), 0, []

    def collect(self, rows: slice) -> None:
        """After a model call: add every layer's weights at `rows`, the B rows of the conditional
        branch in the model's batch (diffusion/guidance.py: conditional_rows)."""
        h, w = self.latent_hw
        keep, this_call = self.calls in self.keep_calls, 0
        for layer in self.layers:
            weights = layer.last_weights[rows].float().mean(1)           # (B, h_l*w_l, L) mean of heads
            factor = round((h * w / weights.shape[1]) ** 0.5)            # this layer's downsampling
            maps = weights.transpose(1, 2).reshape(self.batch, -1, h // factor, w // factor)
            maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
            self.total = maps if self.total is None else self.total + maps  # (B, L, h, w)
            if keep:
                this_call = this_call + maps
            self.count += 1
        if keep:
            self.kept.append((this_call / len(self.layers)).cpu())       # (B, L, h, w) mean of layers
        self.calls += 1

    def maps(self) -> torch.Tensor:
        """(B, L, h, w): the mean over heads, layers and steps, on the CPU."""
        return (self.total / self.count).cpu()

    def step_maps(self) -> torch.Tensor:
        """(K, B, L, h, w): the mean over heads and layers at each of the K kept calls, in order."""
        return torch.stack(self.kept)

    def close(self) -> None:
        """Stop keeping the weights (which costs one more small matmul per layer)."""
        for layer in self.layers:
            layer.record, layer.last_weights = False, None
