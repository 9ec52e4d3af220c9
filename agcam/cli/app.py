"""``agcam app``: a page to look at explanations in a browser.

Serves a local page (Gradio) on 127.0.0.1 (``--host 0.0.0.0`` to bind elsewhere; anyone who
reaches it can run models on this machine and read the checkpoints it names): pick a shipped
sample or upload an image, pick a model (``vit_agcam_learnt`` offline, a timm name, ``hf:<repo>``
or a checkpoint on this machine), tick methods; it shows each method's map over the image with
its boxes (the figures of ``agcam explain``), the top-5 classes with their probabilities, the
maps of another class on a click, the boxes at another threshold without recomputing the maps,
and saves the figure. Images over ``--max_pixels`` are refused from their header, before
decoding. Needs ``gradio`` (``pip install 'agcam[app]'``). See docs/app.md.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import add_model_args, add_out_arg
from agcam.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to serve on (default: {DEFAULT_HOST}, this machine only; "
                             "0.0.0.0 serves every network interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default: {DEFAULT_PORT})")
    # the model loaded at start and selected on the page
    add_model_args(parser, default="vit_agcam_learnt", default_text="vit_agcam_learnt, offline",
                   checkpoint=False)
    parser.add_argument("--max_pixels", type=int, default=None,
                        help="largest image accepted, in pixels, checked from the header before "
                             "decoding (default: 40000000)")
    parser.add_argument("--samples", default=None,
                        help="folder of sample images listed on the page (default: the "
                             "repository's samples/)")
    add_out_arg(parser, "a folder the Save button writes figures to", default="explanations")
    return parser


def main(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: must be in [1, 65535]")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise UsageError(f"--max_pixels {args.max_pixels}: must be at least 1")
    import importlib.util
    if importlib.util.find_spec("gradio") is None:     # found, not imported (seconds) yet
        raise UsageError("agcam app needs gradio: pip install 'agcam[app]' (or "
                         "pip install -r requirements.txt)")
    from agcam.app.engine import MAX_PIXELS, AppError, Engine, ModelSpec
    from agcam.app.page import serve
    from agcam.cli.common import resolve_device
    engine = Engine(resolve_device(args.device), max_pixels=args.max_pixels or MAX_PIXELS)
    try:
        loaded = engine.model(ModelSpec(args.model))
    except AppError as exc:     # "model X: ..." / "checkpoint X: ...", named as the flag
        raise UsageError(f"--{exc}" if str(exc).startswith("model ") else str(exc)) from None
    try:
        page = serve(engine, args.host, args.port, args.samples, args.out, args.model)
    except OSError as exc:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot serve there "
                         f"({exc})") from None
    print(f"loaded {args.model} in {loaded.seconds:.1f} s; serving on {page.local_url} "
          "(Ctrl+C stops)", flush=True)
    page.block_thread()
    return 0
