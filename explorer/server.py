"""The explorer's web server: the page's static files and a JSON API over HTTP. What a request
may hold is checked in explorer/requests.py; generations wait in explorer/jobs.py's queue.

Standard library only (http.server, threading, queue): no dependency and no CDN, every byte of
the page is a file of explorer/static/. Generations go through one queue and one worker thread,
in the order they came; the page polls GET /api/jobs/ID for its position, the steps done and,
at the end, the image URLs. A browser that goes away mid-generation costs nothing: the job
finishes, and its result waits in memory (the last KEEP_JOBS jobs).

    GET  /                         the page (static/index.html); /static/NAME its other files
    GET  /docs/NAME, /code/PATH    the docs pages and code files the panels link (text)
    GET  /api/info                 the model, the limits, the defaults
    POST /api/generate             {prompt, negative_prompt, sampler, steps, guidance, eta, seed, n}
    POST /api/rerun                {job, image, step, seed, n}: variations from step `step`
    POST /api/sdedit               the settings, with {image: base64 file, strength}
    POST /api/sweep                the settings: one seed at guidance 0, 1, 3, 7
    GET  /api/jobs/ID              {state, position, done, total, error, result}
    GET  /api/jobs/ID/image/I.png, /xt/K/I.png, /x0/K/I.png, /attention/I/TOKEN/K.png (K or all)
    POST /api/similarity           {text}: cosine similarity to the held-out images (CLIP)
    GET  /api/held_out/I.png       those images

Every bad value is refused server-side with status 400 and {"error": "one line naming it"}.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common.images import png_bytes
from explorer.jobs import KEEP_JOBS, Job, JobQueue
from explorer.requests import BadRequest, Limits, number, parse_settings, text
from explorer.session import SWEEP_SCALES, Explorer, Result, Settings, heat_png, read_upload

ROOT = Path(__file__).resolve().parent.parent          # the repository
STATIC = Path(__file__).resolve().parent / "static"    # the page's own files
LINKED = ("docs/04-reverse-diffusion.md", "docs/07-sampling.md", "docs/08-why-diffusion-works.md",
          "docs/12-latent-diffusion.md", "docs/15-clip.md", "docs/16-cross-attention.md",
          "docs/glossary.md", "diffusion/pipeline.py", "diffusion/sampling.py",
          "diffusion/guidance.py", "models/attention.py", "models/clip.py",
          "explorer/session.py")                     # the files the page links, nothing else
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# the page may load nothing from anywhere but this server (data: and blob: for a local preview)
SECURITY = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "object-src 'none'; base-uri 'none'; form-action 'self'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


# ---- HTTP ----------------------------------------------------------------------------------

def describe(job: Job, position: int) -> dict:
    """A job as the page polls it: where it is, and at the end what it made."""
    out = {"id": job.id, "kind": job.kind, "state": job.state, "position": position,
           "done": job.done, "total": job.total, "error": job.error,
           "started": job.started, "finished": job.finished}
    result: Result | None = job.result
    if result is not None:
        base = f"/api/jobs/{job.id}"
        out["result"] = {
            "size": int(result.images.shape[-1]),
            "images": [{"url": f"{base}/image/{i}.png", "label": label, "seed": seed}
                       for i, (label, seed) in enumerate(zip(result.labels, result.seeds))],
            "steps": result.steps, "tokens": result.tokens,
            "attention": result.attention is not None, "settings": vars(result.settings)}
    return out


class Handler(BaseHTTPRequestHandler):
    server_version = "explorer"
    explorer: Explorer
    jobs: JobQueue
    limits: Limits
    quiet = False

    # -- answering --
    def send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away: nothing to do
            pass

    def send_json(self, value, status: int = 200) -> None:
        self.send(status, json.dumps(value).encode(), "application/json")

    def fail(self, status: int, message: str) -> None:
        self.send_json({"error": message}, status)

    def log_message(self, format, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    # -- GET --
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                return self.send_file(STATIC / "index.html")
            if path.startswith("/static/"):
                return self.send_static(path[len("/static/"):])
            if path.startswith("/docs/"):                 # /docs/NAME: docs/NAME
                return self.send_linked(path[1:])
            if path.startswith("/code/"):                 # /code/PATH: PATH in the repository
                return self.send_linked(path[len("/code/"):])
            if path == "/api/info":
                return self.send_json(self.info())
            match = re.fullmatch(r"/api/jobs/(\d+)(/.*)?", path)
            if match:
                return self.send_job(int(match.group(1)), match.group(2) or "")
            match = re.fullmatch(r"/api/held_out/(\d+)\.png", path)
            if match and self.explorer.clip is not None:
                i = int(match.group(1))
                if i < len(self.explorer.held_out_images):
                    return self.send(200, png_bytes(self.explorer.held_out_images[i]), TYPES[".png"])
            self.fail(404, f"{path}: no such page")
        except BadRequest as error:
            self.fail(error.status, str(error))

    do_HEAD = do_GET

    def send_file(self, file: Path) -> None:
        self.send(200, file.read_bytes(), TYPES.get(file.suffix, "application/octet-stream"))

    def send_static(self, name: str) -> None:
        """Only a file directly in static/ whose name is plain: no '..', no '/', no '%'."""
        allowed = {f.name for f in STATIC.iterdir() if f.is_file()}
        if name not in allowed:
            return self.fail(404, f"/static/{name}: not a file of the page")
        self.send_file(STATIC / name)

    def send_linked(self, name: str) -> None:
        if name not in LINKED:
            return self.fail(404, f"{name}: not one of the files the page links")
        self.send(200, (ROOT / name).read_bytes(), "text/plain; charset=utf-8")

    def info(self) -> dict:
        e = self.explorer
        return {"checkpoint": e.ckpt, "kind": "text-to-image" if e.has_text else (
                    "pixel DDPM (stage 1)" if e.is_pixel_model else "unconditional latent model"),
                "text": e.has_text, "step": e.step, "size": e.image_size,
                "timesteps": e.num_timesteps, "samplers": list(e.samplers),
                "defaults": {**vars(Settings()), "guidance": e.default_guidance,
                             "sampler": e.default_sampler},
                "limits": vars(self.limits), "sweep": list(SWEEP_SCALES),
                "clip": e.clip is not None, "clip_note": e.clip_note,
                "vocabulary": len(e.vocabulary())}

    def send_job(self, number: int, rest: str) -> None:
        job = self.jobs.jobs.get(number)
        if job is None:
            return self.fail(404, f"job {number}: no such job (only the last {KEEP_JOBS} are kept)")
        if not rest:
            return self.send_json(describe(job, self.jobs.position(job)))
        result: Result | None = job.result
        if result is None:
            return self.fail(404, f"job {number} has no images yet ({job.state})")
        png = self.job_png(result, rest)
        if png is None:
            return self.fail(404, f"job {number}: no image {rest}")
        self.send(200, png, TYPES[".png"])

    @staticmethod
    def job_png(result: Result, rest: str) -> bytes | None:
        """/image/I.png, /xt/K/I.png, /x0/K/I.png, /attention/I/TOKEN/(K|all).png -> PNG bytes."""
        N, K = len(result.images), len(result.steps)
        if m := re.fullmatch(r"/image/(\d+)\.png", rest):
            i = int(m.group(1))
            return png_bytes(result.images[i]) if i < N else None
        if m := re.fullmatch(r"/(xt|x0)/(\d+)/(\d+)\.png", rest):
            k, i = int(m.group(2)), int(m.group(3))
            if k >= K or i >= N:
                return None
            return png_bytes((result.x_t if m.group(1) == "xt" else result.x0)[k, i])
        if (m := re.fullmatch(r"/attention/(\d+)/(\d+)/(\d+|all)\.png", rest)) and \
                result.attention is not None:
            i, token, k = int(m.group(1)), int(m.group(2)), m.group(3)
            if i >= N or token >= result.attention.shape[2] or (k != "all" and int(k) >= K):
                return None
            heat = result.attention_mean[i, token] if k == "all" else result.attention[int(k), i, token]
            return heat_png(heat, 4 * result.images.shape[-1])
        return None

    # -- POST --
    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {"/api/generate": self.post_generate, "/api/rerun": self.post_rerun,
                  "/api/sdedit": self.post_sdedit, "/api/sweep": self.post_sweep,
                  "/api/similarity": self.post_similarity}
        if path not in routes:
            return self.fail(404, f"{path}: no such endpoint")
        try:
            data = self.read_json()
            routes[path](data)
        except BadRequest as error:
            self.fail(error.status, str(error))

    def read_json(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("a request body with a Content-Length is expected", 411)
        if int(length) > self.limits.max_body:
            if int(length) <= 4 * self.limits.max_body:   # read it away, so the page gets the answer
                for start in range(0, int(length), 2**16):
                    self.rfile.read(min(2**16, int(length) - start))
            else:                          # too much to even read: answer and hang up
                self.close_connection = True
            raise BadRequest(f"request of {int(length)} bytes; at most {self.limits.max_body} "
                             "(an upload of about 3 MB)", 413)
        try:
            return json.loads(self.rfile.read(int(length)) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequest(f"the body is not JSON ({error})") from None

    def queued(self, kind: str, run, total: int) -> None:
        job = self.jobs.submit(kind, run, total)
        self.send_json({"job": job.id, "position": self.jobs.position(job)}, 202)

    def post_generate(self, data) -> None:
        settings = parse_settings(data, self.explorer, self.limits)
        self.queued("generate", lambda on_step: self.explorer.generate(settings, on_step),
                    self.explorer.model_calls(settings))

    def post_sweep(self, data) -> None:
        if not self.explorer.has_text:
            raise BadRequest("the guidance sweep needs a text model; this one has no text")
        settings = parse_settings(data, self.explorer, self.limits)
        self.queued("sweep", lambda on_step: self.explorer.sweep(settings, on_step),
                    4 * self.explorer.model_calls(settings))

    def post_rerun(self, data) -> None:
        if not isinstance(data, dict):
            raise BadRequest("expected a JSON object")
        number_ = number(data, "job", int, 1, 2**31 - 1, 0)
        parent = self.jobs.jobs.get(number_)
        if parent is None or parent.result is None or not parent.result.steps:
            raise BadRequest(f"job {number_}: no finished generation with a trajectory to re-run")
        result = parent.result
        image = number(data, "image", int, 0, len(result.images) - 1, 0)
        step = number(data, "step", int, 0, len(result.steps) - 1, 0)
        seed = number(data, "seed", int, 0, 2**31 - 1, result.settings.seed + 1000)
        n = number(data, "n", int, 1, self.limits.max_images, 4)
        total = self.explorer.model_calls(result.settings,
                                          self.explorer.rerun_strength(result.steps[step]))
        self.queued("rerun", lambda on_step: self.explorer.rerun(result, image, step, seed, n,
                                                                 on_step), total)

    def post_sdedit(self, data) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise BadRequest("image: expected the image file as base64 text")
        try:
            upload = base64.b64decode(data["image"].split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("image: not base64 text") from None
        strength = number(data, "strength", float, 0, 1, 0.5)
        settings = parse_settings(data, self.explorer, self.limits, extra=("image", "strength"))
        try:   # decoded once, here: a non-image is refused now, not in the queue
            image = read_upload(upload, self.explorer.image_size)       # (1, 3, S, S)
        except ValueError as error:
            raise BadRequest(f"image: {error}") from None
        self.queued("sdedit",
                    lambda on_step: self.explorer.sdedit(image, strength, settings, on_step),
                    self.explorer.model_calls(settings, strength))

    def post_similarity(self, data) -> None:
        e = self.explorer
        if e.clip is None:
            raise BadRequest(e.clip_note or "this model has no CLIP")
        query = text(data if isinstance(data, dict) else {}, "text", self.limits.max_prompt)
        if not query.strip():
            raise BadRequest("text: expected a few words, e.g. 'a smiling woman'")
        scores = e.similarity(query)
        unknown = e.clip.tokenizer.unknown_words(query)
        self.send_json({"text": query, "unknown": unknown, "images": [
            {"url": f"/api/held_out/{i}.png", "caption": caption, "similarity": score}
            for i, (caption, score) in enumerate(zip(e.held_out_captions, scores))]})


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000,
                limits: Limits | None = None, quiet: bool = False) -> ThreadingHTTPServer:
    """A server for `explorer` (not started: call serve_forever). Port 0 picks a free port."""
    limits = limits or Limits()
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer, "limits": limits,
                                                   "jobs": JobQueue(limits), "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
