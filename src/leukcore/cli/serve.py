"""``leuk serve``: the web demo (``/predict``, ``/health``)."""


def register(sub):
    p = sub.add_parser("serve", help="run the web demo: POST /predict an image, GET /health",
                       description="Serve a small web demo on this machine (research use only).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--model", default="all-binary", help="default model for /predict")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.set_defaults(func=run)


def run(args):
    from ..serve import serve

    serve(args.host, args.port, default_model=args.model, device=args.device)
    return 0
