"""The explorer's defences (issue 27), each against the request an attacker or a broken client
sends: a foreign Host (DNS rebinding), a post of another site (CSRF), numbers and nesting that
break Python's parsers, a decompression bomb, idle and lying connections, other methods, and
guessable job ids. Every refusal is a JSON error of one line with the security headers, and the
server's log has no traceback. The server runs in this process (explorer.server.make_server), so
a test can lower its TIMEOUT and MAX_CONNECTIONS."""

import base64
import http.client
import json
import re
import select
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager

import pytest
import torch

from tests.test_explorer import call, finished

ATTACK = {"steps": 1, "n": 1, "prompt": "="}   # the body: one cheap image


@pytest.fixture(scope="module")
def model(ldm_run):
    from explorer.session import Explorer
    torch.set_num_threads(1)
    return Explorer(ldm_run / "checkpoint.pt", "cpu")


@contextmanager
def serving(model, host: str = "127.0.0.1"):
    """make_server(model) on a free port, served by a thread of this process; yields its URL."""
    from explorer.server import make_server
    server = make_server(model, host, 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base(model):
    with serving(model) as url:
        yield url


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def request(method: str, path: str, host: str, headers=(), body: bytes = b"") -> bytes:
    """The bytes a client (curl, a browser, an attacker) writes: HTTP/1.1, these headers only."""
    lines = [f"{method} {path} HTTP/1.1", *([f"Host: {host}"] if host else []), *headers]
    if body and not any(h.lower().startswith("content-length:") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def read_answer(s: socket.socket, method: str = "GET"):
    """(status, headers, JSON or bytes) of the answer on `s`; fails if the server hung up."""
    answer = http.client.HTTPResponse(s, method=method)
    answer.begin()
    payload = answer.read()
    is_json = answer.headers["Content-Type"] == "application/json"
    return answer.status, answer.headers, json.loads(payload) if is_json else payload


def exchange(base: str, data: bytes, timeout: float = 30):
    with socket.create_connection(address(base), timeout=timeout) as s:
        s.sendall(data)
        return read_answer(s, data.split(b" ", 1)[0].decode())


def refused(answer, statuses, *words) -> str:
    """The answer is a JSON error of one line, with its status among `statuses`, naming `words`,
    with the security headers; returns the message."""
    status, headers, body = answer
    assert status in statuses, (status, body)
    assert headers["Content-Type"] == "application/json", headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    message = body["error"]
    assert "\n" not in message and all(w in message for w in words), message
    return message


# ---- who may ask -------------------------------------------------------------------------------

def test_a_foreign_host_is_refused_against_dns_rebinding(base, capsys):
    host, port = address(base)
    curl = ["User-Agent: curl/8.5.0", "Accept: */*"]
    # curl -H 'Host: evil.example' http://127.0.0.1:PORT/api/info: a page of evil.example after
    # its name was rebound to 127.0.0.1
    refused(exchange(base, request("GET", "/api/info", "evil.example", curl)), (421, 403),
            "Host 'evil.example'")
    for foreign in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", "localhost.:80@x"):
        refused(exchange(base, request("GET", "/", foreign)), (421, 403), "Host")
    refused(exchange(base, request("GET", "/api/info", "")), (421, 403), "Host missing")
    # the names of this address, with or without the port, are served
    for own in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost",
                f"[::1]:{port}"):
        assert exchange(base, request("GET", "/api/info", own))[0] == 200, own
    assert "Traceback" not in capsys.readouterr().err


def test_on_every_address_an_ip_host_is_served_and_a_name_is_not(model):
    with serving(model, "0.0.0.0") as url:
        assert exchange(url, request("GET", "/api/info", "192.168.1.5:8000"))[0] == 200
        assert exchange(url, request("GET", "/api/info", "[fe80::1]"))[0] == 200
        refused(exchange(url, request("GET", "/api/info", "evil.example")), (421, 403), "Host")


def test_a_post_of_another_site_is_refused_against_csrf(base, capsys):
    host, port = address(base)
    own, body = f"{host}:{port}", json.dumps(ATTACK).encode()
    # curl -H 'Origin: http://evil.example' -H 'Content-Type: text/plain' --data '{...}'
    attack = request("POST", "/api/generate", own, ["User-Agent: curl/8.5.0", "Accept: */*",
                     "Origin: http://evil.example", "Content-Type: text/plain"], body)
    refused(exchange(base, attack), (403,), "Content-Type 'text/plain'", "application/json")
    for headers, named in [
            (["Origin: http://evil.example", "Content-Type: application/json"], "Origin"),
            (["Content-Type: text/plain"], "Content-Type"),             # a form, enctype text/plain
            (["Content-Type: application/x-www-form-urlencoded", f"Origin: http://{own}"],
             "Content-Type"),
            ([], "Content-Type ''"),
            (["Origin: null", "Content-Type: application/json"], "Origin 'null'"),
            ([f"Origin: http://{own}.evil.example", "Content-Type: application/json"], "Origin")]:
        refused(exchange(base, request("POST", "/api/generate", own, headers, body)), (403,), named)
    # the page's own fetch() (its Origin, application/json) and curl (no Origin) are served
    jobs = []
    for headers in ([f"Origin: http://{own}", "Content-Type: application/json"],
                    ["Content-Type: application/json; charset=utf-8"]):
        status, _, answer = exchange(base, request("POST", "/api/generate", own, headers, body))
        assert status == 202, answer
        jobs.append(answer["job"])
    for job in jobs:
        finished(base, job)
    assert "Traceback" not in capsys.readouterr().err


# ---- bad bodies: an answer each, never a dropped connection ------------------------------------

def bomb_png(side: int = 20000) -> bytes:
    """A 1-bit PNG of side x side pixels (400 M) whose zeros compress to about 48 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)   # 1 bit grey, no interlace
    rows = zlib.compress(b"\0" * (side * (side // 8 + 1)), 9)     # a filter byte and side/8 bytes
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


JSON = ["Content-Type: application/json"]
DIGITS = "7" * 5000     # past int()'s 4300 digits


@pytest.mark.parametrize("method, path, headers, body, status, words", [
    ("POST", "/api/generate", JSON, b'{"steps": Infinity}', 400, ["steps inf", "expected"]),
    ("POST", "/api/generate", JSON, b'{"n": 1e400}', 400, ["n inf", "expected"]),
    ("POST", "/api/generate", JSON, b'{"guidance_interval": [0, NaN]}', 400,
     ["guidance_interval nan"]),
    ("POST", "/api/generate", JSON, b'{"seed": %s}' % DIGITS.encode(), 400, ["5000 digits"]),
    ("POST", "/api/generate", JSON, b'{"prompt": ' + b"[" * 50000 + b"]" * 50000 + b"}", 400,
     ["nested too deep"]),
    ("POST", "/api/generate", [*JSON, f"Content-Length: {DIGITS}"], b"{}", 413, ["5000 digits"]),
    ("POST", "/api/generate", [*JSON, "Content-Length: \xb2"], b"{}", 400, ["Content-Length"]),
    ("POST", "/api/rerun", JSON, b'{"job": 1e400}', 400, ["job inf"]),
    ("GET", f"/api/jobs/{DIGITS}", [], b"", 404, ["no such page"]),
    ("GET", f"/api/jobs/{DIGITS}/image/{DIGITS}.png", [], b"", 404, ["no such page"]),
    ("GET", f"/api/held_out/{DIGITS}.png", [], b"", 404, ["no such page"]),
])
def test_a_bad_body_number_or_path_gets_its_json_error(base, capsys, method, path, headers, body,
                                                         status, words):
    host, port = address(base)
    refused(exchange(base, request(method, path, f"{host}:{port}", headers, body)), (status,),
            *words)
    assert "Traceback" not in capsys.readouterr().err


def test_a_decompression_bomb_upload_is_refused(base, capsys):
    png = bomb_png()
    assert len(png) < 60_000
    body = json.dumps({"image": base64.b64encode(png).decode(), "strength": 0.5}).encode()
    host, port = address(base)
    refused(exchange(base, request("POST", "/api/sdedit", f"{host}:{port}", JSON, body)), (400,),
            "image:", "too many pixels")
    assert "Traceback" not in capsys.readouterr().err


# ---- connections: timed out, and counted -------------------------------------------------------

def test_idle_lying_and_slow_connections_are_timed_out_and_counted(model, monkeypatch, capsys):
    from explorer import server
    monkeypatch.setattr(server, "TIMEOUT", 0.5)
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 4)
    with serving(model) as url:
        host, port = address(url)
        # 4 idle connections take every thread; the 5th is answered 503 at once
        idle = [socket.create_connection((host, port), timeout=5) for _ in range(4)]
        with socket.create_connection((host, port), timeout=5) as fifth:
            refused(read_answer(fifth), (503,), "4 connections")
        for s in idle:   # each is hung up on after TIMEOUT seconds of silence
            assert s.recv(1) == b""
            s.close()
        deadline = time.time() + 5
        while (status := call(url, "/api/info")[0]) == 503 and time.time() < deadline:
            time.sleep(0.05)
        assert status == 200
        # a Content-Length that lies (1000 bytes announced, 10 sent), and a body that trickles
        # a byte every 0.2 s (each under TIMEOUT, all of it over): 408, and the thread is free
        for trickle in (False, True):
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(request("POST", "/api/generate", f"{host}:{port}",
                                  [*JSON, "Content-Length: 1000"], b'{"n": 1, }'))
                start = time.time()
                while not select.select([s], [], [], 0.2)[0] and time.time() < start + 5:
                    if trickle:
                        s.sendall(b" ")
                refused(read_answer(s, "POST"), (408,), "did not arrive within 0.5 s")
                assert time.time() - start < 3
    assert "Traceback" not in capsys.readouterr().err


# ---- methods, headers, job ids -----------------------------------------------------------------

def test_other_methods_get_a_json_405_with_the_security_headers(base):
    host, port = address(base)
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        answer = exchange(base, request(method, "/api/info", f"{host}:{port}"))
        refused(answer, (405,), method, "expected GET, HEAD or POST")
        assert answer[1]["Allow"] == "GET, HEAD, POST"
    refused(exchange(base, request("BREW", "/", f"{host}:{port}")), (501,), "BREW")
    refused(exchange(base, b"GET / HTTP/9\r\n\r\n"), (400,), "HTTP/9")  # a broken request line
    # the page itself may be framed by no other site
    status, headers, _ = exchange(base, request("GET", "/", f"{host}:{port}"))
    assert status == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_job_ids_are_long_random_tokens_and_lookups_work(base):
    ids = [call(base, "/api/generate", {**ATTACK, "seed": seed})[1]["job"] for seed in (0, 1)]
    for job in ids:
        assert isinstance(job, str) and re.fullmatch(r"[A-Za-z0-9_-]{20,}", job), job
    assert ids[0] != ids[1] and not any(job.isdigit() for job in ids)
    state = finished(base, ids[1])
    assert call(base, state["result"]["images"][0]["url"])[0] == 200
    for guess in ("1", "2", "0"):                  # sequential ids name no job
        assert call(base, f"/api/jobs/{guess}")[0] == 404
    status, answer = call(base, "/api/rerun", {"job": ids[1], "step": 0, "n": 1})
    assert status == 202, answer
    finished(base, answer["job"])
    status, answer = call(base, "/api/rerun", {"job": ids[1][:-1], "step": 0})
    assert status == 400 and "no finished generation" in answer["error"]
