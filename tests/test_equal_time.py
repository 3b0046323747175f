"""benchmarks/equal_time.py's bookkeeping: the scores it reads from eval.json and the table it
prints (mean over seeds, with the range), and that its stage-4 recipe names the Makefile's."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import equal_time  # noqa: E402


def test_stage_4_scores_read_the_summary_and_the_single_prompts():
    report = {"summary": {"single": {"accuracy": 0.9, "diversity": 0.7},
                          "pair": {"accuracy": 0.8}, "triple": {"accuracy": 0.6}},
              "prompts": {"single": [{"accuracy": 0.25, "unconditional": 0.5},
                                     {"accuracy": 1.0, "unconditional": 0.2},
                                     {"accuracy": 0.5, "unconditional": 0.5}]}}
    scores = equal_time.scores(4, report)
    assert scores == {"single": 0.9, "pair": 0.8, "triple": 0.6, "worst_single": 0.25,
                      "singles_not_above_unconditional": 2, "diversity": 0.7}
    assert equal_time.scores(1, {"frechet_distance": {"ratio_to_floor": 2.5}}) == {
        "frechet_over_floor": 2.5}


def test_the_table_gives_the_mean_and_range_over_seeds():
    results = {f"a | v | seed {s}": {"setting": "a", "variant": "v", "seed": s, "steps": steps,
                                     "scores": {"x": value}}
               for s, steps, value in ((0, 10, 1.0), (1, 12, 3.0))}
    results["b |  | seed 0"] = {"setting": "b", "variant": "", "seed": 0, "steps": 7,
                                "scores": {"x": 0.5}}
    lines = equal_time.table(1, results).splitlines()
    assert lines[2] == "| a | v | 2 | 10/12 | 2.000 (1.000..3.000) |"
    assert lines[3] == "| b | default | 1 | 7 | 0.500 |"


@pytest.mark.parametrize("flag", ["--preset", "--lr-schedule", "--sample-every"])
def test_the_recipes_use_the_makefile_demo_flags(flag):
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    demo = makefile[makefile.index("demo: "):]
    for stage in (1, 4):
        recipe = equal_time.RECIPES[stage]
        value = recipe[recipe.index(flag) + 1]
        script = demo[demo.index(recipe[0]):]
        script = script[:script.index("$(call") if "$(call" in script else len(script)]
        assert f"{flag} {value}" in script.replace("\\\n", " ").replace("\t", " ")
