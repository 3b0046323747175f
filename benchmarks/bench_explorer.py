"""The explorer's answer time: from Generate to the images, as the page sees it over HTTP.

    python benchmarks/bench_explorer.py --ckpt runs/demo/ldm/checkpoint.pt

Starts explore.py on the checkpoint (a free port on 127.0.0.1), then for each seed: POST
/api/generate (4 images, DPM-Solver++ 20 steps by default), poll the job every 50 ms as the page
does (every 250 ms there), and fetch the images. Prints each round's seconds, the server's own
job time (the worker's start to end) and the median, min and max over the rounds after the
first (which warms up the model's kernels).
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def request(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    sent = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(sent, timeout=600) as answer:
        payload = answer.read()
        return json.loads(payload) if answer.headers["Content-Type"] == "application/json" else payload


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="runs/demo/ldm/checkpoint.pt")
    parser.add_argument("--prompt", default="a photo of a smiling woman with blond hair")
    parser.add_argument("--sampler", default="dpm++")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=4, help="images per Generate")
    parser.add_argument("--rounds", type=int, default=7, help="Generates, one seed each")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    server = subprocess.Popen([sys.executable, "explore.py", "--ckpt", args.ckpt, "--port", "0",
                               "--quiet", "--device", args.device], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        for line in server.stdout:
            if match := re.search(r"serving on (http://[\d.]+:\d+)/", line):
                base = match.group(1)
                break
        else:
            raise SystemExit(f"explore.py did not start on {args.ckpt}")
        info = request(base + "/api/info")
        body = {"sampler": args.sampler, "steps": args.steps, "n": args.n}
        if info["text"]:
            body["prompt"] = args.prompt
        print(f"{args.ckpt}: {info['kind']}, {info['size']}x{info['size']}; {args.n} images, "
              f"{args.sampler} {args.steps} steps")
        rounds, jobs = [], []
        for seed in range(args.rounds):
            start = time.perf_counter()
            job = request(base + "/api/generate", {**body, "seed": seed})["job"]
            while (state := request(f"{base}/api/jobs/{job}"))["state"] not in ("done", "failed"):
                time.sleep(0.05)
            if state["state"] == "failed":
                raise SystemExit(state["error"])
            for image in state["result"]["images"]:
                request(base + image["url"])
            rounds.append(time.perf_counter() - start)
            jobs.append(state["finished"] - state["started"])
            print(f"  seed {seed}: {rounds[-1]:.2f} s (the server's job {jobs[-1]:.2f} s)")
        timed = rounds[1:] or rounds
        print(f"Generate to {args.n} images: median {statistics.median(timed):.2f} s, "
              f"{min(timed):.2f}-{max(timed):.2f} s over {len(timed)} rounds after the first")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
