"""EDM2's power-function EMA (training/ema.py) against its closed forms, and the lengths a
training run keeps, picked by sample.py --ema-length."""

import numpy as np
import pytest
import torch

from common.errors import CheckpointError
from conftest import TINY, run
from training.ema import EMA, MAX_SIGMA_REL, power_profile, sigma_rel_to_gamma


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_gamma_solves_the_relative_length_equation(sigma_rel):
    gamma = sigma_rel_to_gamma(sigma_rel)
    # sigma_rel^2 = (gamma+1) / ((gamma+2)^2 (gamma+3)), EDM2 eq. 3
    assert gamma > 0
    assert (gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)) == pytest.approx(sigma_rel ** 2, rel=1e-9)


def test_edm2_reference_values():
    # EDM2 (appendix C.1): sigma_rel 0.05 and 0.10 correspond to gamma about 16.97 and 6.94.
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for bad in (0.0, -0.1, MAX_SIGMA_REL, 0.5):
        with pytest.raises(ValueError, match="sigma_rel"):
            sigma_rel_to_gamma(bad)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
@pytest.mark.parametrize("steps", [1, 7, 60])
def test_averaging_profile_matches_the_formula(sigma_rel, steps):
    """Give the weights of step tau the one-hot vector e_tau: the average after n steps is then
    its own profile, which must be (tau^(g+1) - (tau-1)^(g+1)) / n^(g+1) for every tau."""
    model = torch.nn.Linear(steps, 1, bias=False)
    ema = EMA(model, sigma_rels=(sigma_rel,))
    for tau in range(1, steps + 1):
        with torch.no_grad():
            model.weight.zero_()
            model.weight[0, tau - 1] = 1.0
        ema.update(model)
    gamma = sigma_rel_to_gamma(sigma_rel)
    expected = power_profile(gamma, steps)
    got = ema.model.weight[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    # and the continuous profile of EDM2, (g+1) tau^g / n^(g+1), at the last steps
    if steps == 60:
        tau = np.arange(50, 61)
        np.testing.assert_allclose(expected[49:], (gamma + 1) * tau ** gamma / 60 ** (gamma + 1),
                                   rtol=0.2)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_profile_has_the_relative_length_it_was_asked_for(sigma_rel):
    n = 20_000
    weights = power_profile(sigma_rel_to_gamma(sigma_rel), n)
    x = np.arange(1, n + 1) / n
    mean = (weights * x).sum()
    std = np.sqrt((weights * (x - mean) ** 2).sum())
    assert std == pytest.approx(sigma_rel, rel=1e-3)


def test_several_lengths_are_kept_and_the_first_samples():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, sigma_rels=(0.2, 0.05))
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    state = ema.state_dict()
    assert sorted(state["lengths"]) == ["0.05", "0.2"]
    for name, sigma in (("0.2", 0.2), ("0.05", 0.05)):
        expected = (power_profile(sigma_rel_to_gamma(sigma), 3) * [1.0, 2.0, 3.0]).sum()
        assert state["lengths"][name]["weight"][0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(state["model"]["weight"], state["lengths"]["0.2"]["weight"])
    again = EMA(model, sigma_rels=(0.2, 0.05))
    again.load_state_dict(state)
    assert again.num_updates == 3
    assert torch.equal(again.models["0.05"].weight, ema.models["0.05"].weight)
    with pytest.raises(CheckpointError, match="EMA lengths"):
        EMA(model, sigma_rels=(0.1,)).load_state_dict(state)


def test_a_run_keeps_its_lengths_and_sample_py_picks_one(tmp_path):
    out = tmp_path / "run"
    run(["train_unconditional.py", *TINY, "--steps", "3", "--ema-lengths", "0.2", "0.05",
         "--out", str(out)])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert sorted(state["ema"]["lengths"]) == ["0.05", "0.2"]
    assert list(state["config"]["ema_lengths"]) == [0.2, 0.05]
    grids = {}
    for length in ("0.2", "0.05"):
        path = tmp_path / f"{length}.png"
        run(["sample.py", "--ckpt", str(out / "checkpoint.pt"), "--n", "2", "--steps", "2",
             "--ema-length", length, "--out", str(path), "--device", "cpu"])
        grids[length] = path.read_bytes()
    run(["sample.py", "--ckpt", str(out / "checkpoint.pt"), "--n", "2", "--steps", "2",
         "--out", str(tmp_path / "default.png"), "--device", "cpu"])
    assert (tmp_path / "default.png").read_bytes() == grids["0.2"]  # the first length samples
    assert grids["0.2"] != grids["0.05"]
    failed = run(["sample.py", "--ckpt", str(out / "checkpoint.pt"), "--ema-length", "0.3",
                  "--out", str(tmp_path / "x.png"), "--device", "cpu"], check=False)
    assert failed.returncode != 0 and "keeps the EMA lengths 0.2 0.05" in failed.stderr
    refused = run(["train_unconditional.py", *TINY, "--steps", "1", "--ema-lengths", "0.3",
                   "--out", str(tmp_path / "bad")], check=False)
    assert refused.returncode != 0 and "--ema-lengths 0.3" in refused.stderr
