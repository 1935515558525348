"""``leuk batch SOURCE -o OUT``: analyse an archive of slides on dask.distributed."""

from __future__ import annotations

import sys


def register(sub):
    """Add the ``leuk batch`` subcommand to ``sub``."""
    from .analyze import add_model_args

    p = sub.add_parser(
        "batch",
        help="analyse many slides (a folder or a list file) on dask.distributed",
        description="Analyse every slide of SOURCE (a folder, searched recursively, or a text "
        "file with one path per line) into OUT/<slide>/. Runs on a local cluster of "
        "worker processes, or on an existing dask scheduler. Resumable: a slide is "
        "skipped only when its outputs are complete and were computed from the same "
        "file (size, mtime, content samples), settings and models (card and weights "
        "hashes); otherwise it is redone and the reason printed. Failures go to "
        "OUT/errors.json; one row per slide in OUT/batch_summary.csv.",
    )
    p.add_argument("source", help="folder of slides (recursive) or a list file")
    p.add_argument("-o", "--out", required=True, help="output root folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, help="local worker processes (default 1)")
    g.add_argument("--scheduler", default=None, help="address of an existing dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--threads-per-worker", type=int, default=1, help="threads per worker process (default 1)")
    p.add_argument(
        "--no-resume", action="store_true", help="re-analyse slides even if their outputs are complete and current"
    )
    add_model_args(p)
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="analyse around pixels that are not in the file (missing tiles / chunks, NaN): they are "
        "skipped and listed in summary.json (missing.count, missing.boxes; complete: false) "
        "; default: stop with an error naming the file and the box",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args):
    """Run ``leuk batch`` with the parsed ``args``; the exit code."""
    from tqdm import tqdm

    from ..batch import BatchCluster, run_batch
    from .analyze import settings_from_args

    bar = None

    def progress(ev):
        nonlocal bar
        plan = (ev.data or {}).get("plan") if ev.data else None
        if plan:
            for name, why in sorted(plan.items()):
                if why.startswith("redo"):
                    print(f"{name}: {why}", file=sys.stderr)
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(total=ev.total, desc="slides", unit="slide", file=sys.stderr, dynamic_ncols=True)
        bar.n = ev.done
        bar.set_postfix_str(ev.message[:40], refresh=False)
        bar.refresh()

    try:
        settings = settings_from_args(args).replace(threads=args.threads_per_worker)
        res = run_batch(
            args.source,
            args.out,
            settings=settings,
            cluster=BatchCluster(workers=args.workers, scheduler=args.scheduler),
            resume=not args.no_resume,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    print(
        f"slides: {res['n_total']}  done: {res['n_done']}  skipped (complete): {res['n_skipped']}  "
        f"failed: {res['n_error']}  wall: {res['wall_s']:.1f} s"
    )
    print(f"summary: {res['paths']['summary_csv']}")
    if res["n_error"]:
        print(f"errors:  {res['paths']['errors_json']}", file=sys.stderr)
        for e in res.errors[:10]:
            print(f"  {e['slide']}: {e['error']}", file=sys.stderr)
        return 1
    return 0
