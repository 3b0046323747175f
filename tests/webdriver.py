"""A few W3C WebDriver commands over HTTP (urllib), enough to drive the system Chromium through
Debian's chromedriver in the browser test: no selenium, no browser download.

    with Browser() as browser:                 # starts chromedriver and a headless Chromium
        browser.open("http://127.0.0.1:8000/")
        browser.find("#prompt").type("a smiling woman")
        browser.run("return document.title")
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"   # the W3C key of an element reference
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium on PATH (Debian: apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Element:
    def __init__(self, browser: "Browser", element_id: str):
        self.browser, self.id = browser, element_id

    def click(self) -> None:
        self.browser.command("POST", f"element/{self.id}/click", {})

    def clear(self) -> None:
        self.browser.command("POST", f"element/{self.id}/clear", {})

    def type(self, text: str) -> None:
        self.browser.command("POST", f"element/{self.id}/value", {"text": text})


class Browser:
    def __init__(self, width: int = 1200, height: int = 1800):
        self.port = free_port()
        self.driver = subprocess.Popen(["chromedriver", f"--port={self.port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        binary = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
        options = {"binary": binary, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                              "--disable-dev-shm-usage", "--no-first-run",
                                              f"--window-size={width},{height}"]}
        deadline = time.time() + 30
        while True:
            try:
                answer = self.request("POST", "/session", {"capabilities": {"alwaysMatch": {
                    "browserName": "chrome", "goog:chromeOptions": options}}})
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    self.driver.kill()
                    raise
                time.sleep(0.2)
        self.session = answer["value"]["sessionId"]

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AssertionError(f"webdriver {method} {path}: {error.read()[:500]!r}") from None

    def command(self, method: str, path: str, body=None):
        return self.request(method, f"/session/{self.session}/{path}", body)["value"]

    def open(self, url: str) -> None:
        self.command("POST", "url", {"url": url})

    def find(self, css: str) -> Element:
        found = self.command("POST", "element", {"using": "css selector", "value": css})
        return Element(self, found[ELEMENT])

    def run(self, script: str, *args):
        """Run JavaScript in the page: `return ...` gives the value back."""
        return self.command("POST", "execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 60.0, what: str = ""):
        """Run `script` until it returns something truthy; AssertionError after `timeout` s."""
        deadline = time.time() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or script}")
            time.sleep(0.2)

    def screenshot(self, path) -> None:
        path.write_bytes(base64.b64decode(self.command("GET", "screenshot")))

    def close(self) -> None:
        try:
            self.request("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
