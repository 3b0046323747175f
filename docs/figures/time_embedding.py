"""Figure for point 5: the sinusoidal timestep embedding the UNet receives.

    python -m docs.figures.time_embedding

writes docs/figures/time_embedding.png. Left: timestep_embedding(t, 128) for t = 0 .. 999 as a
heatmap (channels 0-63 are sines, 64-127 cosines; frequencies fall from 1 to 1/10000 radians per
step, so the left columns of each half flicker and the right ones barely change). Middle: the cosine
similarity between the embeddings of every pair of timesteps: 1 on the diagonal, high for nearby t,
lower for distant t. Right: that similarity against the distance |t - t'|, from three starting t;
the curves coincide, because the similarity of two sinusoidal codes depends on t - t' only.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from docs.figures.common import FIGURES  # noqa: E402
from models.embeddings import timestep_embedding  # noqa: E402

DIM = 128  # the width of the sinusoidal code (the UNet uses base_channels)


def main() -> None:
    t = torch.arange(1000)
    embedding = timestep_embedding(t, DIM)                                   # (1000, DIM)
    unit = F.normalize(embedding, dim=1)
    similarity = unit @ unit.T                                               # (1000, 1000)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    image = axes[0].imshow(embedding, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                           interpolation="nearest")
    axes[0].axvline(DIM / 2 - 0.5, color="black", lw=0.8)
    axes[0].set_xlabel(f"channel (0-{DIM // 2 - 1}: sin, {DIM // 2}-{DIM - 1}: cos)")
    axes[0].set_ylabel("timestep t")
    axes[0].set_title(f"timestep_embedding(t, {DIM})", fontsize=10)
    fig.colorbar(image, ax=axes[0], fraction=0.05)

    image = axes[1].imshow(similarity, cmap="viridis", interpolation="nearest")
    axes[1].set_xlabel("timestep t")
    axes[1].set_ylabel("timestep t'")
    axes[1].set_title("cosine similarity, embeddings of t and t'", fontsize=10)
    fig.colorbar(image, ax=axes[1], fraction=0.05)

    # sin(a) sin(b) + cos(a) cos(b) = cos(a - b): the similarity depends on t - t' only.
    for t0, colour, width in ((100, "tab:blue", 4), (500, "tab:orange", 2), (900, "black", 0.7)):
        offsets = torch.arange(1, 1000 - t0 if t0 < 500 else t0)
        others = t0 + offsets if t0 < 500 else t0 - offsets
        axes[2].plot(offsets, similarity[t0, others], color=colour, lw=width,
                     label=f"from t = {t0}")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("|t - t'| (log scale)")
    axes[2].set_ylabel("cosine similarity")
    axes[2].set_title("similarity against |t - t'|: one curve for all t", fontsize=10)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path = FIGURES / "time_embedding.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
