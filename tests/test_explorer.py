"""The explorer (explore.py, explorer/): its endpoints with good and bad input, the queue's order,
the page's images against sample.py's bit for bit, the computations against closed forms, and
the page itself in a real headless Chromium."""

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests import webdriver
from tests.conftest import ROOT, TINY, run

PROMPT = "a photo of a smiling woman with blond hair"


# ---- a server for the tests --------------------------------------------------------------------

@contextmanager
def explorer(ckpt, *flags):
    """explore.py on a free port, as a user starts it; yields its base URL."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "explore.py", "--ckpt", str(ckpt), "--port", "0",
                                "--device", "cpu", "--quiet", *flags], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)/ \(this computer only\)", line)
            if match:
                break
        else:
            raise AssertionError(f"explore.py did not start: {process.stderr.read()[-3000:]}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(10)


def call(base, path, body=None, raw: bytes | None = None):
    """(status, decoded JSON or the raw bytes) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {} if data is None else {"Content-Type": "application/json"}   # as the page posts
    request = urllib.request.Request(base + path, data=data, headers=headers,
                                     method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, payload, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        status, payload, kind = error.code, error.read(), error.headers["Content-Type"]
    return status, json.loads(payload) if kind == "application/json" else payload


def finished(base, job: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, state = call(base, f"/api/jobs/{job}")
        assert status == 200, state
        if state["state"] in ("done", "failed"):
            assert state["state"] == "done", state["error"]
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} not done after {timeout} s")


def submit(base, path, body) -> dict:
    status, answer = call(base, path, body)
    assert status == 202, answer
    return finished(base, answer["job"])


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def png_file(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pixel_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer_pixels") / "unconditional"
    run(["train_unconditional.py", *TINY, "--cache-dir", str(out.parent / "cache"), "--steps", "2",
         "--out", str(out)])
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def ldm_server(ldm_run):
    with explorer(ldm_run / "checkpoint.pt", "--max-steps", "30", "--max-images", "6") as base:
        yield base


@pytest.fixture(scope="module")
def pixel_server(pixel_ckpt):
    with explorer(pixel_ckpt) as base:
        yield base


# ---- the command line --------------------------------------------------------------------------

def test_explore_refuses_a_missing_checkpoint_and_a_taken_port(ldm_run):
    result = run(["explore.py", "--ckpt", "no/such/checkpoint.pt"], check=False)
    assert result.returncode == 2 and "no/such/checkpoint.pt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1          # one line, no traceback
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["explore.py", "--ckpt", str(ldm_run / "checkpoint.pt"), "--port", str(port)],
                     check=False)
    assert result.returncode == 2 and f"--port {port}: cannot listen there" in result.stderr


# ---- static files: the page's own, nothing else ------------------------------------------------

def test_the_page_and_only_its_files_are_served(ldm_server, ldm_run):
    status, page = call(ldm_server, "/")
    assert status == 200 and b"<title>Diffusion explorer</title>" in page
    # the model's words, listed on the page (issue 28): its tokenizer's, without special tokens
    known = torch.load(ldm_run / "checkpoint.pt", weights_only=True)["tokenizer"]["vocabulary"]
    assert call(ldm_server, "/api/info")[1]["words"] == sorted(known[4:])
    with urllib.request.urlopen(ldm_server + "/") as response:
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    # every file the page names (scripts, styles, the docs and code it links) is there
    links = re.findall(rb'(?:href|src)="(/[^"]*)"', page)
    assert len(links) >= 15
    for link in set(links):
        status, _ = call(ldm_server, link.decode())
        assert status == 200, link
    # and nothing outside static/ or the linked files, however the path is spelled
    for path in ["/static/../explore.py", "/static/%2e%2e/explore.py", "/static/..%2fexplore.py",
                 "/static/", "/docs/../README.md", "/code/training/checkpoints.py",
                 "/docs/01-generative-models.md", "/etc/passwd", "/explorer/server.py"]:
        status, answer = call(ldm_server, path)
        assert status == 404, (path, answer)
        assert "error" in answer


# ---- bad input: refused server-side with a message ---------------------------------------------

@pytest.mark.parametrize("body, message", [
    ({"sampler": "euler"}, "sampler 'euler': expected one of ddpm, ddim, dpm++"),
    ({"steps": 31}, "steps 31: expected a number from 1 to 30"),        # --max-steps 30
    ({"steps": 0}, "steps 0: expected a number from 1 to 30"),
    ({"steps": 2.5}, "steps 2.5: expected a whole number"),
    ({"steps": "ten"}, "steps 'ten': expected a number"),
    ({"n": 7}, "n 7: expected a number from 1 to 6"),                   # --max-images 6
    ({"n": 0}, "n 0: expected a number from 1 to 6"),
    ({"guidance": -1}, "guidance -1: expected a number from 0 to 30"),
    ({"eta": 1.5, "sampler": "ddim"}, "eta 1.5: expected a number from 0 to 1"),
    ({"eta": 0.5, "sampler": "dpm++"}, "eta 0.5: dpm++ is deterministic"),
    ({"seed": -3}, "seed -3: expected a number from 0"),
    ({"sampler": "ddpm"}, "sampler 'ddpm' takes all 1000 steps; this server allows at most 30"),
    ({"prompt": "x" * 301}, "prompt: 301 characters; at most 300"),
    ({"prompt": 7}, "prompt: expected a text, got int"),
    ({"colour": "red"}, "unknown setting 'colour'"),
])
def test_bad_settings_are_refused_with_a_message(ldm_server, body, message):
    status, answer = call(ldm_server, "/api/generate", body)
    assert status == 400 and message in answer["error"], answer


def test_bad_requests_of_every_kind_are_refused(ldm_server, pixel_server):
    status, answer = call(ldm_server, "/api/generate", raw=b"{not json")
    assert status == 400 and "the body is not JSON" in answer["error"]
    assert call(ldm_server, "/api/nothing", {})[0] == 404
    assert call(ldm_server, "/api/jobs/999")[0] == 404
    status, answer = call(ldm_server, "/api/rerun", {"job": 999})
    assert status == 400 and "job 999: no finished generation" in answer["error"]
    status, answer = call(ldm_server, "/api/similarity", {"text": "   "})
    assert status == 400 and "text: expected a few words" in answer["error"]
    # a stage-1 model has no text: prompts, the sweep and CLIP are refused
    status, answer = call(pixel_server, "/api/generate", {"prompt": "a smiling woman"})
    assert status == 400 and "this model has no text encoder" in answer["error"]
    assert "needs a text model" in call(pixel_server, "/api/sweep", {})[1]["error"]
    assert call(pixel_server, "/api/similarity", {"text": "a smile"})[0] == 400


def test_uploads_must_be_real_images_under_the_size_limit(pixel_server):
    def sdedit(image: str, **extra):
        return call(pixel_server, "/api/sdedit", {"image": image, "strength": 0.0, "n": 1,
                                                  "sampler": "ddim", "steps": 4, **extra})
    status, answer = sdedit(base64.b64encode(b"GIF89a but not really an image").decode())
    assert status == 400 and "image: the upload is not a readable image" in answer["error"]
    status, answer = sdedit("this is not base64!")
    assert status == 400 and "image: not base64 text" in answer["error"]
    status, answer = sdedit(base64.b64encode(png_file(np.zeros((8, 8, 3), np.uint8))).decode(),
                            strength=2)
    assert status == 400 and "strength 2" in answer["error"]
    # over the 4 MiB request limit: 413 with the message
    status, answer = call(pixel_server, "/api/sdedit", raw=b"{" + b" " * (4 * 2**20) + b"}")
    assert status == 413 and "at most 4194304" in answer["error"]
    host, port = pixel_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:   # 1 GB announced: refused unread
        s.sendall(f"POST /api/sdedit HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                  "application/json\r\nContent-Length: 1000000000\r\n\r\n{".encode())
        assert s.recv(200).startswith(b"HTTP/1.0 413")
    # a real image at strength 0 comes back as it went in (16x16, the model's size)
    face = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    status, answer = sdedit("data:image/png;base64," + base64.b64encode(png_file(face)).decode())
    assert status == 202, answer
    state = finished(pixel_server, answer["job"])
    _, png = call(pixel_server, state["result"]["images"][0]["url"])
    assert (pixels(png) == face).all()


# ---- the queue ---------------------------------------------------------------------------------

def test_two_requests_are_served_one_after_the_other_in_order(pixel_server):
    first = call(pixel_server, "/api/generate", {"sampler": "ddim", "steps": 400, "n": 2,
                                                 "seed": 1})[1]
    second = call(pixel_server, "/api/generate", {"sampler": "ddim", "steps": 20, "seed": 2})[1]
    assert second["position"] == 1                    # one job before it: the first (400 steps)
    a, b = finished(pixel_server, first["job"]), finished(pixel_server, second["job"])
    assert a["finished"] <= b["started"]              # the second waited for the first
    assert a["done"] == a["total"] == 400 and b["done"] == b["total"] == 20
    assert b["result"]["settings"]["seed"] == 2


def test_a_browser_that_goes_away_does_not_stop_the_server(pixel_server):
    job = call(pixel_server, "/api/generate", {"sampler": "ddim", "steps": 10, "n": 2})[1]["job"]
    host, port = pixel_server.removeprefix("http://").split(":")
    for _ in range(10):   # ask for images and hang up before the answer
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"GET /api/jobs/{job}/image/0.png HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    state = finished(pixel_server, job)
    assert call(pixel_server, state["result"]["images"][1]["url"])[0] == 200


# ---- the page's images are sample.py's ---------------------------------------------------------

def test_the_page_image_equals_sample_py_bit_for_bit(ldm_server, ldm_run, tmp_path):
    settings = {"prompt": PROMPT, "sampler": "ddim", "steps": 4, "guidance": 2.0, "eta": 0.5,
                "seed": 5, "n": 2}                          # eta 0.5: stochastic steps too
    state = submit(ldm_server, "/api/generate", settings)
    run(["sample.py", "--ckpt", str(ldm_run / "checkpoint.pt"), "--prompt", PROMPT, "--n", "2",
         "--seed", "5", "--sampler", "ddim", "--steps", "4", "--guidance", "2", "--eta", "0.5",
         "--device", "cpu", "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path)])
    files = sorted(tmp_path.glob("000*_seed*.png"))
    assert len(files) == 2
    for image, file in zip(state["result"]["images"], files):
        page = pixels(call(ldm_server, image["url"])[1])
        assert page.shape == (32, 32, 3)
        assert np.array_equal(page, np.asarray(Image.open(file).convert("RGB"))), file


def test_the_pixel_page_image_equals_sample_py_bit_for_bit(pixel_server, pixel_ckpt, tmp_path):
    state = submit(pixel_server, "/api/generate",
                   {"sampler": "ddim", "steps": 5, "eta": 1.0, "seed": 9, "n": 3})
    run(["sample.py", "--ckpt", str(pixel_ckpt), "--n", "3", "--seed", "9", "--sampler", "ddim",
         "--steps", "5", "--eta", "1", "--device", "cpu", "--out", str(tmp_path / "grid.png"),
         "--out-dir", str(tmp_path)])
    files = sorted(tmp_path.glob("000*_unconditional_seed*.png"))  # image j: seed 9 + j
    assert [f.name for f in files] == [f"{j:04d}_unconditional_seed{9 + j}.png" for j in range(3)]
    for image, file in zip(state["result"]["images"], files):
        assert np.array_equal(pixels(call(pixel_server, image["url"])[1]),
                              np.asarray(Image.open(file).convert("RGB"))), file


# ---- the computations: closed forms and clear directions ---------------------------------------

@pytest.fixture(scope="module")
def session(ldm_run):
    from explorer.session import Explorer
    torch.set_num_threads(1)
    return Explorer(ldm_run / "checkpoint.pt", "cpu")


def test_trajectory_and_attention_per_word_at_each_step(session):
    from diffusion import spread_steps
    from explorer.session import TRAJECTORY_STEPS, Settings
    settings = Settings(prompt="a smiling man with zzyzx", sampler="ddim", steps=6, guidance=3.0,
                        seed=0, n=2)
    result = session.generate(settings)
    assert result.steps == session.scheduler_for(settings)[0].timesteps.tolist()  # all 6 steps kept
    assert result.x_t.shape == (6, 2, 3, 32, 32) and result.x0.shape == (6, 2, 3, 32, 32)
    assert torch.equal(result.x_t[0], session.pipe.vae.decode(torch.stack([
        torch.randn(session.pipe.sample_shape, generator=torch.Generator().manual_seed(s))
        for s in (0, 1)]) / session.pipe.scale_factor))                     # x_T: the seeds' noise
    # attention: softmax over the tokens, so every position's weights sum to 1 at every step
    K, N, L, h, w = result.attention.shape
    assert (K, N, L) == (6, 2, 7)                   # <bos> a smiling man with zzyzx <eos>
    assert torch.allclose(result.attention.sum(2), torch.ones(K, N, h, w), atol=1e-5)
    assert torch.allclose(result.attention.mean(0), result.attention_mean, atol=1e-6)
    assert [t["word"] for t in result.tokens] == ["<bos>", "a", "smiling", "man", "with", "zzyzx",
                                                  "<eos>"]
    assert [t["known"] for t in result.tokens] == [True] * 5 + [False, True]
    # a long run keeps 50 steps, evenly spread, with the first and the last
    kept = spread_steps(list(range(999, -1, -1)), TRAJECTORY_STEPS)
    assert len(kept) == 50 and kept[0] == 999 and kept[-1] == 0
    assert max(np.diff(kept)) - min(np.diff(kept)) <= 1


def test_rerun_from_a_late_step_changes_less_than_from_an_early_one(session):
    from explorer.session import Settings
    settings = Settings(prompt=PROMPT, sampler="ddim", steps=10, guidance=3.0, seed=0, n=1)
    parent = session.generate(settings)
    late = session.rerun(parent, image=0, step=len(parent.steps) - 1, seed=50, n=4)
    early = session.rerun(parent, image=0, step=0, seed=50, n=4)
    def change(r):
        return (r.images - parent.images[0]).pow(2).mean().item()
    assert late.steps == parent.steps[-1:] and early.steps == parent.steps  # where each starts
    assert change(late) < 0.1 * change(early)
    # the variations differ from one another (new noise per seed)
    assert (early.images[0] - early.images[1]).abs().max() > 1e-3


def test_the_sweep_is_generate_at_each_guidance(session):
    from explorer.session import SWEEP_SCALES, Settings
    settings = Settings(prompt=PROMPT, sampler="ddim", steps=4, guidance=3.0, seed=7, n=1)
    sweep = session.sweep(settings)
    assert sweep.labels == [f"w = {w:g}" for w in SWEEP_SCALES] == ["w = 0", "w = 1", "w = 3",
                                                                   "w = 7"]
    for i, w in enumerate(SWEEP_SCALES):
        single = session.generate(Settings(**{**vars(settings), "guidance": w}))
        assert torch.equal(sweep.images[i], single.images[0])


def test_clip_similarity_is_the_cosine_of_the_two_embeddings(ldm_server, ldm_run):
    from common.checkpoints import load_checkpoint
    from models.clip import load_clip
    from models.clip_eval import embed_latents, embed_texts
    status, answer = call(ldm_server, "/api/similarity", {"text": "a smiling woman zzyzx"})
    assert status == 200 and answer["unknown"] == ["zzyzx"]
    clip_path = load_checkpoint(ldm_run / "checkpoint.pt", kind="ldm")["config"]["clip"]
    clip = load_clip(clip_path)
    held_out = load_checkpoint(Path(clip.config["vae"]).parent / "latents_val.pt", kind="latents")
    z = held_out["mean"][:len(answer["images"])].float() * clip.scale_factor
    image_vectors = embed_latents(clip.clip, z, "cpu")
    text_vector = embed_texts(clip.clip, clip.tokenizer, ["a smiling woman zzyzx"], "cpu")[0]
    cosine = torch.nn.functional.cosine_similarity(image_vectors, text_vector[None], dim=1)
    assert len(answer["images"]) == 8
    assert np.allclose([i["similarity"] for i in answer["images"]], cosine.tolist(), atol=1e-5)
    assert call(ldm_server, answer["images"][0]["url"])[0] == 200


# ---- the page in a real browser ----------------------------------------------------------------

@pytest.mark.skipif(webdriver.missing() is not None, reason=str(webdriver.missing()))
def test_the_page_in_a_headless_chromium(ldm_server, tmp_path):
    with webdriver.Browser() as browser:
        browser.open(ldm_server + "/")
        browser.wait("return document.body.dataset.ready === 'yes'", what="the page to start")
        # before the first Generate no image is shown without a picture (a broken-image frame)
        empty = "return [...document.querySelectorAll('img')].filter(i => !i.hidden && " \
                "i.offsetParent !== null && !i.getAttribute('src')).map(i => i.id)"
        assert browser.run(empty) == []
        prompt = browser.find("#prompt")
        prompt.clear()
        prompt.type("a smiling man with glasses")
        steps = browser.find("#steps")
        steps.clear()
        steps.type("8")
        for field, level in (("#guidance_lo", "0.2"), ("#guidance_hi", "0.8")):
            box = browser.find(field)
            box.clear()
            box.type(level)
        browser.find("#generate").click()
        # the images arrive, decoded, at the model's size
        loaded = "return [...document.querySelectorAll('#images img')].filter(i => i.complete " \
                 "&& i.naturalWidth === 32 && i.naturalHeight === 32).length"
        assert browser.wait(f"{loaded} === 4 && 4", what="4 images of 32x32") == 4
        # the guidance interval of the form reached the job
        first = browser.run("return document.querySelector('#images img').src")
        job = re.search(r"/api/jobs/([\w-]+)/", first).group(1)
        status, described = call(ldm_server, f"/api/jobs/{job}")
        assert status == 200 and described["result"]["settings"]["guidance_interval"] == [0.2, 0.8]
        # moving the trajectory slider shows another x_t
        before = browser.run("return document.getElementById('xt').src")
        browser.find("#step").type("\ue012\ue012\ue012")      # the left-arrow key, 3 times
        after = browser.wait("const s = document.getElementById('xt').src; "
                             f"return s !== {json.dumps(before)} && s")
        assert re.search(r"/xt/4/0\.png$", after), after       # 8 steps kept: 7 -> 4
        browser.wait("const i = document.getElementById('xt'); return i.complete && i.naturalWidth")
        # a word lights up: its overlay appears over the image
        browser.run("document.querySelectorAll('#tokens button')[2].click()")   # "smiling"
        overlay = browser.wait("const o = document.getElementById('attention-overlay'); return "
                               "!o.hidden && o.complete && o.naturalWidth", what="the overlay")
        assert overlay == 128
        assert "smiling" in browser.run("return document.getElementById('attention-label').textContent")
        # re-run from the slider's step: new images, titled as variations
        browser.find("#rerun").click()
        browser.wait("return document.getElementById('result-title').textContent"
                     ".startsWith('variations')", what="the variations")
        assert browser.wait(f"{loaded} === 4 && 4") == 4
        browser.screenshot(tmp_path / "explorer.png")
        assert (tmp_path / "explorer.png").stat().st_size > 10_000
        # everything the page loaded came from this server
        resources = browser.run("return performance.getEntriesByType('resource').map(e => e.name)")
        assert len(resources) >= 10
        outside = [r for r in resources if not r.startswith(ldm_server + "/")]
        assert outside == [], outside
        assert browser.run("return document.querySelectorAll('script[type=module]').length") == 1
        # the words the model knows, listed under its description (issue 28)
        assert browser.run("return document.getElementById('words-box').hidden") is False
        assert " words: " in browser.run("return document.getElementById('words').textContent")
