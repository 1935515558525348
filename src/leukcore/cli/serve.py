"""``leuk serve``: the web demo (``/``, ``/predict``, ``/health``) on FastAPI + uvicorn (``serve`` extra)."""

import sys


def register(sub):
    """Add the ``leuk serve`` subcommand to ``sub``."""
    from ..serve import Limits

    d = Limits()
    p = sub.add_parser(
        "serve",
        help="run the web demo: POST /predict an image, GET /health",
        description="Serve a small web demo on this machine (research use only). "
        'Needs the serve extra: pip install "leukcore[serve]".',
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--model", default="all-binary", help="default model for /predict")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable; loopback names "
        "and the bound address are always allowed; '*' allows any)",
    )
    p.add_argument("--workers", type=int, default=d.workers, help=f"inference threads (default {d.workers})")
    p.add_argument(
        "--queue", type=int, default=d.queue, help=f"requests that may wait for a worker before 503 (default {d.queue})"
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_bytes / 1e6,
        help=f"largest request body in MB (default {d.max_bytes / 1e6:g})",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=d.max_pixels / 1e6,
        help=f"largest image in megapixels, from its header (default {d.max_pixels / 1e6:g})",
    )
    p.set_defaults(func=run)


def run(args):
    """Run ``leuk serve`` with the parsed ``args``; the exit code."""
    from ..serve import MissingExtra, require_web

    try:
        require_web()
    except MissingExtra as e:
        print(f"leuk serve: error: {e}", file=sys.stderr)
        return 2
    if args.workers < 1 or args.queue < 0 or args.max_upload_mb <= 0 or args.max_megapixels <= 0:
        print("leuk serve: error: --workers >= 1, --queue >= 0 and positive limits please", file=sys.stderr)
        return 2
    from ..serve import serve

    serve(
        args.host,
        args.port,
        default_model=args.model,
        device=args.device,
        allow_hosts=tuple(args.allow_host),
        workers=args.workers,
        queue=args.queue,
        max_bytes=int(args.max_upload_mb * 1e6),
        max_pixels=int(args.max_megapixels * 1e6),
    )
    return 0
