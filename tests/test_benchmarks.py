"""The benchmarks' arithmetic: FLOP counts against closed forms, and the paired timer; and the
benchmarks' copies of the stage scripts' configurations against the scripts."""

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import bench_parts, bench_unet  # noqa: E402
from benchmarks.common import (  # noqa: E402
    MODEL_CONFIGS,
    alternating_seconds,
    conv_reference,
    count_gflop,
    paired_seconds,
)
from models.attention import Attention  # noqa: E402


def test_attention_flops_are_counted_on_the_cpu():
    """softmax(Q K^T / sqrt d) V: two batched matmuls of 2 B H L L_ctx d FLOPs each forward;
    backward recomputes Q K^T and takes four more (torch's own formula for the CUDA kernels)."""
    B, H, L, L_ctx, d = 2, 4, 64, 41, 16
    q = torch.randn(B, H, L, d, requires_grad=True)
    k, v = torch.randn(B, H, L_ctx, d), torch.randn(B, H, L_ctx, d)
    one_matmul = 2 * B * H * L * L_ctx * d / 1e9
    assert abs(count_gflop(lambda: F.scaled_dot_product_attention(q, k, v)) - 2 * one_matmul) < 1e-12
    total = count_gflop(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert abs(total - 7 * one_matmul) < 1e-12


def test_conv_reference_flops_match_the_counter():
    step, gflop = conv_reference(8, 6, 3, torch.device("cpu"), "fp32")
    # forward 2 * B * C_out * H * W * C_in * 9, backward twice that (input and weight gradients)
    assert abs(gflop - 3 * 2 * 3 * 8 * 36 * 8 * 9 / 1e9) < 1e-12
    assert abs(count_gflop(step) - gflop) < 1e-12


def test_paired_seconds_times_each_side_in_the_same_rounds():
    calls = {"step": 0, "reference": 0, "twin": 0}

    def counter(name):
        def fn():
            calls[name] += 1
        return fn

    medians = paired_seconds(counter("step"), counter("reference"), torch.device("cpu"), rounds=4,
                             warmup=1, others=(counter("twin"),))
    assert len(medians) == 3 and all(m > 0 for m in medians)
    assert calls["step"] == 1 + 1 + 4  # warm-up, calibration, rounds
    assert calls["twin"] == 1 + 4
    assert calls["reference"] >= 1 + 3 + 4  # at least once per round


# (benchmark table, stage script it copies): the benchmarks may not import a stage script, so they
# hold their own copies of the Config defaults and presets they time; a test may import the script.
COPIES = [(bench_unet.CONFIGS, "train_unconditional"),
          (MODEL_CONFIGS["vae"], "train_vae"),
          (MODEL_CONFIGS["clip"], "train_clip"),
          (MODEL_CONFIGS["ldm"], "train_ldm")]


@pytest.mark.parametrize("table, script", COPIES, ids=[script for _, script in COPIES])
def test_benchmark_configs_match_the_stage_scripts(table, script):
    """Every value of a benchmark's table equals the script's: "default" its Config() defaults,
    any other name that preset of its PRESETS applied to them (as parse_config applies it)."""
    module = importlib.import_module(script)
    assert set(table) == {"default", "cpu"}
    for name, values in table.items():
        cfg = module.Config()
        if name != "default":
            assert name in module.PRESETS, f"{script}.py has no preset {name!r}"
            cfg = dataclasses.replace(cfg, **{k: v for k, v in module.PRESETS[name].items()
                                              if not k.startswith("_")})
        expected = dataclasses.asdict(cfg)
        for key, value in values.items():
            assert key in expected, f"{script}.Config has no field {key!r}"
            assert (type(value), value) == (type(expected[key]), expected[key]), (
                f"{script}.py {name} {key} = {expected[key]!r}, but the benchmark's copy says "
                f"{value!r}: update the table")


def test_alternating_seconds_calls_each_fn_once_per_round():
    calls = []
    fns = tuple((lambda name=name: calls.append(name)) for name in "abc")
    medians = alternating_seconds(fns, torch.device("cpu"), rounds=4, warmup=1)
    assert len(medians) == 3 and all(m >= 0 for m in medians)
    assert calls == list("abc") * 5  # warm-up, then one call each per round, in turn


def test_bench_parts_compares_equal_computations():
    """The written-out attention is SDPA's softmax(q k^T / sqrt d) v, padding masked; the one-Linear
    q/k/v layer with the three projections stacked is the three-projection Attention."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 16, 8), torch.randn(2, 4, 11, 8), torch.randn(2, 4, 11, 8)
    mask = (torch.arange(11) < 6)[None, None, None].expand(2, 1, 1, 11)
    torch.testing.assert_close(bench_parts.explicit_attention(q, k, v, mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    three, one = Attention(32, None, 4), bench_parts.FusedQKVAttention(32, 4)
    with torch.no_grad():
        one.to_qkv.weight.copy_(torch.cat([three.to_q.weight, three.to_k.weight,
                                           three.to_v.weight]))
        one.to_out.load_state_dict(three.to_out.state_dict())
    x = torch.randn(3, 16, 32)
    torch.testing.assert_close(one(x), three(x))


def test_bench_parts_groups_the_profilers_and_the_counters_op_names():
    group = bench_parts.group_of
    assert [group(n) for n in ("aten::mkldnn_convolution", "aten.convolution_backward.default",
                               "aten::addmm", "aten.mm.default", "aten::bmm",
                               "aten::_scaled_dot_product_flash_attention_for_cpu",
                               "aten::_fused_adamw_", "aten::native_group_norm", "aten::mul")] == [
        "convolution", "convolution", "linear layers", "linear layers", "linear layers",
        "attention kernels", "optimizer", "the rest", "the rest"]
