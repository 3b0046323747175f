"""The explorer: a page in your browser that shows diffusion at work on your own checkpoint.

    python explore.py --ckpt runs/demo/ldm/checkpoint.pt        # then open http://127.0.0.1:8000/
    python explore.py --ckpt runs/unconditional/checkpoint.pt   # a stage-1 model: no text controls

Type a prompt and Generate; then, for the image you pick:
- the trajectory: a slider over the steps shows x_t and the predicted x0 side by side [P4] [P7];
- attention per word: each token of the prompt is a button; its cross-attention map is laid over
  the image, at the slider's step or over all steps [P16];
- re-run from step k: the predicted x0 at that step is re-noised to it with new seeds and
  sampled again, for variations; or an uploaded image at a strength (SDEdit) [P8];
- a guidance sweep: the same seed at w = 0, 1, 3, 7 [P16];
- with the checkpoint's CLIP: a text's cosine similarity to a few held-out images [P15].

Everything is computed by the functions sample.py uses (diffusion/pipeline.py through
explorer/session.py), so a (prompt, seed, settings) on the page gives exactly the image of
`python sample.py --ckpt CKPT --prompt PROMPT --seed SEED --n N ...`. The server is the Python
standard library's (explorer/server.py): one generation at a time from a queue, the page's own
files only, every value checked and capped server-side. It listens on 127.0.0.1 (this computer
only) unless --host says otherwise, and answers only requests that name this address in their
Host (not a site whose name was pointed at it) and, for a POST, come from its own page or a
program (application/json, no other site's Origin); see explorer/server.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import (ConfigError, format_config, main_guard, option, parse_config, pick_device,
                    require)
from explorer.requests import Limits
from explorer.server import make_server
from explorer.session import Explorer


@dataclass
class Config:
    ckpt: str = option("", "a checkpoint.pt of train_ldm.py or train_unconditional.py", required=True)
    host: str = option("127.0.0.1", "address to listen on: 127.0.0.1 = this computer only; "
                                    "0.0.0.0 = every network this computer is on")
    port: int = option(8000, "port to listen on (0: any free port, printed)")
    clip: str = option(None, "the CLIP checkpoint for the similarity panel; default: the one the "
                             "model was trained with (train_ldm --clip), if the file is there",
                       type=str)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    max_images: int = option(8, "images per request, at most")
    max_steps: int = option(1000, "sampling steps per image, at most (ddpm takes all T)")
    quiet: bool = option(False, "do not print a line per request")


def main():
    args = parse_config(Config, description=__doc__.split("\n\n")[0])
    print("config:\n" + format_config(args))
    require(0 <= args.port <= 65535, f"--port {args.port}: expected 0 to 65535")
    require(args.max_images > 0, f"--max-images {args.max_images}: expected a positive number")
    require(args.max_steps > 0, f"--max-steps {args.max_steps}: expected a positive number")
    explorer = Explorer(args.ckpt, pick_device(args.device), clip=args.clip)
    print(f"model: {args.ckpt}, {'text-to-image' if explorer.has_text else 'no text'}, "
          f"{explorer.image_size}x{explorer.image_size} images, {explorer.step} training steps")
    if explorer.has_text:
        print("CLIP panel: " + (f"on ({explorer.clip_path})" if explorer.clip else
                                explorer.clip_note))
    try:
        server = make_server(explorer, args.host, args.port,
                             Limits(max_images=args.max_images, max_steps=args.max_steps),
                             quiet=args.quiet)
    except OSError as error:  # the port is taken, or the address is not this computer's
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen there "
                          f"({error.strerror or error})") from None
    host, port = server.server_address[:2]
    where = ("this computer only" if host.startswith("127.") or host == "::1" else
             "every computer that can reach this one: anyone there can use it")
    print(f"serving on http://{host}:{port}/ ({where}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    main_guard(main)
