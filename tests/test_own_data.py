"""Your own pictures, end to end (issue 28): a folder of drawn shapes captioned "a red circle",
"a blue square" and so on goes through the `small` presets of stages 2-4 at reduced sizes, trained
once for this module. Then:
- the validation grids show the folder's own captions (no face prompts full of <unk>);
- colour following, judged in closed form: the mean colour of an image's inked pixels names the
  colour it shows, and images asked for a colour show it far more often than unconditional ones;
- evaluate.py, with no attribute rows for a judge, reports the CLIP measures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from diffusion import generate, load_pipeline, make_sampler
from tests.conftest import run

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square")


def shapes_folder(root, count: int = 192):
    """count 32x32 images of a red, green or blue circle or square on white, at shifted places
    and sizes, captioned in metadata.jsonl ("a red circle": 6 distinct captions)."""
    root.mkdir(parents=True)
    lines = []
    for i in range(count):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 2]
        image = Image.new("RGB", (32, 32), "white")
        x, y, size = 4 + i % 7, 4 + (i // 7) % 7, 14 + i % 5
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)((x, y, x + size, y + size),
                                                               fill=COLOURS[colour])
        image.save(root / f"{i:03d}.png")
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "text": f"a {colour} {shape}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def colour_shown(images: torch.Tensor) -> list[str]:
    """The judge, in closed form: images (N, 3, S, S) in [-1, 1] -> per image the colour whose
    channel is the largest in the mean of its inked pixels (chroma max - min of the channels over
    0.25; white paper has none), or "none" without ink."""
    x = (images.float() + 1) / 2                                           # (N, 3, S, S) in [0, 1]
    ink = (x.amax(1) - x.amin(1) > 0.25).unsqueeze(1)                      # (N, 1, S, S)
    mean = (x * ink).sum((2, 3)) / ink.sum((2, 3)).clamp(min=1)            # (N, 3) mean RGB
    names = list(COLOURS)  # red, green, blue: channel 0, 1, 2
    return [names[int(m.argmax())] if has_ink else "none"
            for m, has_ink in zip(mean, ink.flatten(1).any(1))]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The folder through stages 2-4 with the small presets, at 16 px and few steps (about a
    minute here): {"data", "vae", "clip", "ldm", "ldm_output"}."""
    root = tmp_path_factory.mktemp("own_data")
    paths = {"data": shapes_folder(root / "shapes")} | {k: root / k for k in ("vae", "clip", "ldm")}
    run(["train_vae.py", "--preset", "small", "--data", str(paths["data"]), "--cache-dir",
         str(root / "cache"), "--val-percent", "20", "--image-size", "16", "--steps", "150",
         "--eval-images", "16", "--scale-images", "64", "--eval-every", "150", "--device", "cpu",
         "--out", str(paths["vae"])])
    run(["train_clip.py", "--preset", "small", "--vae", str(paths["vae"] / "checkpoint.pt"),
         "--steps", "30", "--batch-size", "32", "--text-width", "32", "--text-layers", "1",
         "--embed-dim", "32", "--eval-images", "32", "--device", "cpu", "--out",
         str(paths["clip"])])
    result = run(["train_ldm.py", "--preset", "small", "--vae", str(paths["vae"] / "checkpoint.pt"),
                  "--clip", str(paths["clip"] / "checkpoint.pt"), "--steps", "250",
                  "--batch-size", "32", "--channel-mult", "1", "2", "--attention-levels", "1",
                  "--sample-steps", "2", "--sample-seeds", "1", "--sample-every", "0",
                  "--device", "cpu", "--out", str(paths["ldm"])])
    return paths | {"ldm_output": result.stdout + result.stderr}


def test_the_judge_reads_the_drawn_colours(tmp_path):
    """The closed-form judge is right on every real image of the folder."""
    folder = shapes_folder(tmp_path / "shapes", 30)
    for line in (folder / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        pixels = np.array(Image.open(folder / row["file_name"]).convert("RGB"))  # (32, 32, 3)
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1
        assert colour_shown(image) == [row["text"].split()[1]]
    assert colour_shown(torch.ones(1, 3, 8, 8)) == ["none"]                 # white paper


def test_the_validation_grids_show_the_folders_own_captions(chain):
    rows = (chain["ldm"] / "samples" / "prompts.txt").read_text().splitlines()
    captions = {f"a {c} {s}" for c in COLOURS for s in SHAPES}
    assert rows and {row.split(": ", 1)[1] for row in rows} <= captions
    assert "<unk>" not in chain["ldm_output"]


def test_prompts_get_their_colour_far_more_often_than_unconditional_samples(chain):
    """For each colour prompt, 8 seeds: the share of images showing the asked colour, against
    the share of unconditional images (same seeds) that happen to show it (about 1/3)."""
    pipe = load_pipeline(chain["ldm"] / "checkpoint.pt")
    scheduler, eta = make_sampler(pipe.scheduler, "euler", 10, None, 0.0)
    seeds = list(range(8))
    prompts = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    asked = [p.split()[1] for p in prompts for _ in seeds]
    shown = colour_shown(generate(pipe, [p for p in prompts for _ in seeds], seeds * len(prompts),
                                  2.0, scheduler).images)
    unconditional = colour_shown(generate(pipe, [""] * 24, list(range(24)), 1.0,
                                          scheduler).images)
    following = sum(a == s for a, s in zip(asked, shown)) / len(asked)
    by_chance = sum(unconditional.count(c) for c in COLOURS) / len(COLOURS) / len(unconditional)
    assert following >= 0.9 and following > by_chance + 0.4, (following, by_chance, shown)


def test_evaluate_measures_prompt_following_with_the_clip_when_there_are_no_attributes(
        chain, tmp_path):
    result = run(["evaluate.py", "--ckpt", str(chain["ldm"] / "checkpoint.pt"), "--n", "4",
                  "--unconditional", "24", "--steps", "10", "--device", "cpu", "--out",
                  str(tmp_path / "eval")])
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rates, scores = report["caption_retrieval"], report["clip_score"]
    assert len(report["captions"]) == 6 and rates["chance"] == pytest.approx(1 / 6)
    # the CLIP tells the held-out images' captions apart; generated images follow theirs, and
    # unconditional ones are near chance
    assert rates["real_held_out"] >= 0.8 and rates["generated"] >= 0.8
    assert rates["unconditional"] < 0.5
    assert scores["generated"] > scores["unconditional_with_the_prompts"] + 0.2
    frechet = report["frechet_distance_clip"]
    assert frechet["images_per_set"] == 24                   # every set cut to the smallest
    assert frechet["ratio_to_floor"] == pytest.approx(frechet["generated_vs_real"]
                                                      / frechet["real_train_vs_real_val"])
    assert "judged by the model's CLIP" in result.stdout
    labels = (tmp_path / "eval" / "prompts.txt").read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in labels] == report["captions"]
