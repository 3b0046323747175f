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

What another site, or a stranger on the network, gets (every answer, refusals included, as JSON
with the SECURITY headers):
- a Host that does not name this server's address (DNS rebinding: a site whose name resolves to
  127.0.0.1): 421. Answered: 127.0.0.1, localhost, [::1] and --host, with any port; listening
  on every address (--host 0.0.0.0), any IP address too (a rebinding needs a name).
- a POST without Content-Type: application/json, or with an Origin other than the page's own
  (CSRF: a form or fetch() of another site): 403. curl, which sends no Origin, is served.
- a method other than GET, HEAD and POST: 405 (one http.server does not know: 501).
- a connection silent for TIMEOUT seconds, or a body not all there within it: closed (a body:
  408 first); more than MAX_CONNECTIONS connections at once: 503 and closed.
- job ids of 16 random bytes: a job is seen only by whoever submitted it (or was told its id).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common.images import png_bytes
from explorer.jobs import KEEP_JOBS, Job, JobQueue
from explorer.requests import BadRequest, Limits, number, parse_json, parse_settings, shown, text
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
# the page may load nothing from anywhere but this server (data: and blob: for a local preview),
# and no other site may show it in a frame (clickjacking)
SECURITY = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "object-src 'none'; base-uri 'none'; form-action 'self'; "
                                       "frame-ancestors 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
TIMEOUT = 30.0            # seconds a connection may stay silent, and a body may take to arrive
MAX_CONNECTIONS = 32      # connections served at once (a thread each); past it: 503 and close
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")   # Host names always answered
ANY_ADDRESS = ("", "0.0.0.0", "::")                 # --host values that listen on every address


# ---- who may ask -------------------------------------------------------------------------------

def host_name(header: str) -> str | None:
    """A Host header's name, lowercase, without the port ('[::1]' keeps its brackets); None if
    the header is not NAME or NAME:PORT."""
    match = re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?", header.strip().lower())
    return match.group(1) if match else None


def is_address(name: str) -> bool:
    """An IP address written out ('192.168.1.5', '[fe80::1]'), not a name a DNS server answers."""
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
        return True
    except ValueError:
        return False


def answer_bytes(status: int, reason: str, message: str) -> bytes:
    """A whole JSON error answer, for the server to send without a handler (the 503 when busy)."""
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.0 {status} {reason}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close",
            *(f"{name}: {value}" for name, value in SECURITY.items())]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


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
    default_request_version = "HTTP/1.0"   # never answer as HTTP/0.9, without status or headers
    explorer: Explorer
    jobs: JobQueue
    limits: Limits
    quiet = False
    timeout = TIMEOUT                 # seconds of silence before a read gives up (socket timeout)
    hosts: frozenset = frozenset(LOCAL_NAMES)   # the Host names answered
    any_address = False               # listening on every address: any IP address is a Host too

    # -- answering --
    def send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in {**SECURITY, **(extra or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:  # the browser went away, or stopped reading (timeout): nothing to do
            self.close_connection = True

    def send_json(self, value, status: int = 200) -> None:
        self.send(status, json.dumps(value).encode(), "application/json")

    def fail(self, status: int, message: str, extra: dict | None = None) -> None:
        self.send(status, json.dumps({"error": message}).encode(), "application/json", extra)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, an unknown method, headers too long)
        as JSON with the security headers, like every other answer."""
        self.close_connection = True
        if code == 501:   # a method http.server has no do_ for
            message = f"method {shown(self.command)}: expected GET, HEAD or POST"
        self.fail(code, message or self.responses.get(code, ("refused",))[0])

    def unexpected(self, error: Exception) -> None:
        """A failure no check foresaw: 500 with one line, and one line in the log (where)."""
        where = traceback.extract_tb(error.__traceback__)[-1]
        line = f"{type(error).__name__}: {error}".replace("\n", " ")[:300]
        super().log_message("%s %s: %s (%s:%d)", self.command, shown(self.path), line,
                            Path(where.filename).name, where.lineno)   # even when quiet
        self.close_connection = True
        self.fail(500, f"the server failed on this request ({line})")

    # -- who may ask: the Host (DNS rebinding), and for a POST its Origin and type (CSRF) --
    def parse_request(self) -> bool:
        """http.server's parsing, then the Host check; False when refused (answered already)."""
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host") or []
        name = host_name(hosts[0]) if len(hosts) == 1 else None
        if name is None or not (name in self.hosts or (self.any_address and is_address(name))):
            self.close_connection = True
            self.fail(421, f"Host {shown(', '.join(hosts)) if hosts else 'missing'}: expected "
                           f"{', '.join(sorted(self.hosts))} (with or without the port); a page "
                           "of another site may not reach this server")
            return False
        return True

    def cross_site(self) -> str | None:
        """Why a POST may be another site's (CSRF), or None: a form can post text/plain anywhere,
        and a browser says where a fetch() comes from in its Origin header."""
        kind = self.headers.get("Content-Type", "")
        if kind.split(";", 1)[0].strip().lower() != "application/json":
            return f"Content-Type {shown(kind)}: expected application/json"
        origin, own = self.headers.get("Origin"), "http://" + self.headers["Host"].strip().lower()
        if origin is not None and origin.strip().lower() != own:
            return f"Origin {shown(origin)}: expected this server's own page, {own}"
        return None

    def not_allowed(self) -> None:
        self.fail(405, f"{self.command} {shown(self.path)}: expected GET, HEAD or POST",
                  {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = not_allowed

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
            match = re.fullmatch(r"/api/jobs/([A-Za-z0-9_-]{1,64})(/.*)?", path)
            if match:
                return self.send_job(match.group(1), match.group(2) or "")
            match = re.fullmatch(r"/api/held_out/([0-9]{1,6})\.png", path)
            if match and self.explorer.clip is not None:
                i = int(match.group(1))
                if i < len(self.explorer.held_out_images):
                    return self.send(200, png_bytes(self.explorer.held_out_images[i]), TYPES[".png"])
            self.fail(404, f"{path[:100]}: no such page")
        except BadRequest as error:
            self.fail(error.status, str(error))
        except Exception as error:
            self.unexpected(error)

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
                "vocabulary": len(e.vocabulary()),
                "words": sorted(e.pipe.text.tokenizer.words) if e.has_text else []}

    def send_job(self, job_id: str, rest: str) -> None:
        job = self.jobs.jobs.get(job_id)
        if job is None:
            return self.fail(404, f"job {job_id}: no such job (only the last {KEEP_JOBS} are kept)")
        if not rest:
            return self.send_json(describe(job, self.jobs.position(job)))
        result: Result | None = job.result
        if result is None:
            return self.fail(404, f"job {job_id} has no images yet ({job.state})")
        png = self.job_png(result, rest)
        if png is None:
            return self.fail(404, f"job {job_id}: no image {shown(rest)}")
        self.send(200, png, TYPES[".png"])

    @staticmethod
    def job_png(result: Result, rest: str) -> bytes | None:
        """/image/I.png, /xt/K/I.png, /x0/K/I.png, /attention/I/TOKEN/(K|all).png -> PNG bytes."""
        N, K = len(result.images), len(result.steps)
        if m := re.fullmatch(r"/image/([0-9]{1,6})\.png", rest):   # 6 digits: int() is quick
            i = int(m.group(1))
            return png_bytes(result.images[i]) if i < N else None
        if m := re.fullmatch(r"/(xt|x0)/([0-9]{1,6})/([0-9]{1,6})\.png", rest):
            k, i = int(m.group(2)), int(m.group(3))
            if k >= K or i >= N:
                return None
            return png_bytes((result.x_t if m.group(1) == "xt" else result.x0)[k, i])
        m = re.fullmatch(r"/attention/([0-9]{1,6})/([0-9]{1,6})/([0-9]{1,6}|all)\.png", rest)
        if m and result.attention is not None:
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
        refused = self.cross_site()
        if refused is not None:
            self.close_connection = True
            return self.fail(403, f"{refused}; a form or page of another site may not post here")
        if path not in routes:
            return self.fail(404, f"{path[:100]}: no such endpoint")
        try:
            data = parse_json(self.read_body())
            routes[path](data)
        except BadRequest as error:
            self.fail(error.status, str(error))
        except Exception as error:
            self.unexpected(error)

    def read_body(self) -> bytes:
        """The body, of the size Content-Length says, all of it within `timeout` seconds: a body
        that stops or trickles is answered 408 and hung up on (a lying Content-Length holds no
        thread)."""
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("a request body with a Content-Length is expected", 411)
        if not (length.isascii() and length.isdigit()):
            raise BadRequest(f"Content-Length {shown(length)}: expected a number of bytes")
        size = int(length) if len(length) <= 15 else 10**15   # past 15 digits: too much, is all
        if size > self.limits.max_body:
            if size <= 4 * self.limits.max_body:   # read it away, so the page gets the answer
                self.read_exactly(size)
            else:                          # too much to even read: answer and hang up
                self.close_connection = True
            count = length if len(length) <= 15 else f"{length[:12]}... ({len(length)} digits)"
            raise BadRequest(f"request of {count} bytes; at most {self.limits.max_body} "
                             "(an upload of about 3 MB)", 413)
        return self.read_exactly(size)

    def read_exactly(self, size: int) -> bytes:
        """`size` bytes of the body, a recv at a time, until `timeout` seconds from the first."""
        deadline, chunks, got = time.monotonic() + self.timeout, [], 0
        try:
            while got < size:
                chunk = self.rfile.read1(min(size - got, 2**16))  # one recv, `timeout` at most
                if not chunk:
                    self.close_connection = True
                    raise BadRequest(f"the body ended after {got} of the {size} bytes its "
                                     "Content-Length says")
                chunks.append(chunk)
                got += len(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError
        except TimeoutError:
            self.close_connection = True
            raise BadRequest(f"the body did not arrive within {self.timeout:g} s ({got} of the "
                             f"{size} bytes its Content-Length says)", 408) from None
        return b"".join(chunks)

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
        job_id = data.get("job")
        parent = self.jobs.jobs.get(job_id) if isinstance(job_id, str) else None
        if parent is None or parent.result is None or not parent.result.steps:
            raise BadRequest(f"job {shown(job_id)}: no finished generation with a trajectory "
                             "to re-run (expected the id of one of the last jobs)")
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


class Server(ThreadingHTTPServer):
    """http.server's, with a thread per connection for at most `connections` at once."""
    daemon_threads = True

    def __init__(self, address, handler, connections: int):
        super().__init__(address, handler)
        self.connections, self.slots = connections, threading.BoundedSemaphore(connections)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):   # busy: 503 from this thread, and hang up
            try:
                request.settimeout(1)
                request.sendall(answer_bytes(503, "Service Unavailable",
                                             f"{self.connections} connections at once, the most "
                                             "this server serves; try again in a moment"))
            except OSError:
                pass
            return self.shutdown_request(request)
        try:
            super().process_request(request, client_address)
        except BaseException:   # no thread was started: give the slot back
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A connection that broke (reset, timed out) is one line in the log, not a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            return super().handle_error(request, client_address)
        if not self.RequestHandlerClass.quiet:
            print(f"{client_address[0]}: connection dropped ({type(error).__name__}: {error})",
                  file=sys.stderr)


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000,
                limits: Limits | None = None, quiet: bool = False) -> Server:
    """A server for `explorer` (not started: call serve_forever). Port 0 picks a free port. It
    answers to the Host names of LOCAL_NAMES and `host`, and reads TIMEOUT and MAX_CONNECTIONS
    now (a test may lower them first)."""
    limits = limits or Limits()
    name = f"[{host.lower()}]" if ":" in host else host.lower()
    handler = type("ExplorerHandler", (Handler,), {
        "explorer": explorer, "limits": limits, "jobs": JobQueue(limits), "quiet": quiet,
        "timeout": TIMEOUT, "hosts": frozenset({*LOCAL_NAMES, name} - {"", "[::]"}),
        "any_address": host in ANY_ADDRESS})
    return Server((host, port), handler, MAX_CONNECTIONS)
