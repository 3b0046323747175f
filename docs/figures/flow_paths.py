"""Figure for docs/flow-matching.md: sampling paths of DDPM's deterministic sampler and of flow
matching, for data made of two points, -1 and +1, where both models are known exactly.

    python -m docs.figures.flow_paths

writes docs/figures/flow_paths.png. Both panels start from the same 15 noise values. Left: DDIM
at eta 0 (the probability-flow ODE of DDPM's linear schedule, 100 steps), with the exact noise
prediction eps(x, t) = (x - sqrt(alpha_bar) E[x_0 | x]) / sqrt(1 - alpha_bar). Right: flow
matching's Euler steps (100) on its exact velocity v(x, t) = (x - E[x_0 | x]) / t. For both,
E[x_0 | x] weighs the two points by the likelihood that the path's x_t at t came from them.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from diffusion import DDIMScheduler, sample  # noqa: E402
from diffusion.flow import flow_timesteps, sample_flow  # noqa: E402
from docs.figures.common import FIGURES  # noqa: E402

POINTS = torch.tensor([-1.0, 1.0], dtype=torch.float64)  # the data: two points, equally likely


def posterior_mean(x: torch.Tensor, scale: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t = x] when x_t = scale x_0 + std eps and x_0 is one of POINTS."""
    log_weights = -(x[..., None] - scale[..., None] * POINTS) ** 2 / (2 * std[..., None] ** 2)
    return (torch.softmax(log_weights, dim=-1) * POINTS).sum(-1)


def main() -> None:
    x_T = torch.linspace(-2.5, 2.5, 15, dtype=torch.float64).view(-1, 1, 1, 1)

    ddim = DDIMScheduler(clip_sample=False)
    ddim.set_timesteps(100)
    alpha_bar = ddim.alphas_cumprod.double()

    def eps_model(x, t):
        a, b = alpha_bar[t].sqrt().view(-1, 1, 1, 1), (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
        return (x - a * posterior_mean(x, a, b)) / b

    ddpm_way = []
    sample(eps_model, ddim, x_T, trajectory_steps=ddim.timesteps.tolist(), trajectory=ddpm_way,
           progress=False)

    def velocity(x, t):
        t = t.view(-1, 1, 1, 1).double()
        return (x - posterior_mean(x, 1 - t, t)) / t

    flow_way = []
    x0 = sample_flow(velocity, x_T, 100, trajectory_steps=flow_timesteps(100)[:-1],
                     trajectory=flow_way)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    ddpm_t = [t / 1000 for t, _, _ in ddpm_way] + [0.0]
    ddpm_x = torch.stack([x.flatten() for _, x, _ in ddpm_way]
                         + [ddim.step(eps_model(ddpm_way[-1][1], torch.tensor([0])), 0,
                                      ddpm_way[-1][1]).prev_sample.flatten()])
    flow_t = [t for t, _, _ in flow_way] + [0.0]
    flow_x = torch.stack([x.flatten() for _, x, _ in flow_way] + [x0.flatten()])
    for ax, times, xs, title in (
            (axes[0], ddpm_t, ddpm_x, "DDPM, deterministic (DDIM eta 0): the paths move late and fast"),
            (axes[1], flow_t, flow_x, "flow matching (Euler): the paths move at a steadier pace")):
        ax.plot(times, xs.numpy(), color="tab:blue", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("t / T (DDPM)  or  t (flow):  noise at 1, data at 0")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("x_t (the data: -1 and +1)")
    fig.tight_layout()
    path = FIGURES / "flow_paths.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
