"""`mlp-serve`: a trained model behind HTTP (/predict, /health, /metadata, a page at /)."""

from __future__ import annotations

import argparse
import socket
import sys

from mlptrain.cli.common import add_version_argument, run_command
from mlptrain.errors import UsageError

INSTALL_HINT = "pip install 'mlptrain[serve]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlp-serve",
        description="Serve a trained model over HTTP: POST /predict (image files, JSON or raw "
        "pixels), GET /health, GET /metadata, a page to try it at /, the OpenAPI description "
        "at /openapi.json (browsable at /docs).",
        epilog="examples:\n"
        "  mlp-serve runs/RUN/best.pt\n"
        "  mlp-serve model.onnx --port 8080\n"
        "  mlp-serve --ensemble runs/GROUP/seed-*/best.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="a checkpoint (best.pt) or an ONNX file"
    )
    parser.add_argument(
        "--ensemble", nargs="+", metavar="PATH", help="several checkpoints served as one model"
    )
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="server processes")
    parser.add_argument(
        "--max-batch", type=int, default=64, metavar="N", help="images per model call"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long a batch waits for requests already arriving (a lone one never waits)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=10.0, metavar="MB", help="larger bodies get 413"
    )
    parser.add_argument(
        "--max-images", type=int, default=256, metavar="N", help="images per request (413)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch threads per process (default: torch's)"
    )
    add_version_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("mlp-serve", lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    if bool(args.model) == bool(args.ensemble):
        raise UsageError("name one model file, or several checkpoints with --ensemble")
    if args.ensemble and len(args.ensemble) < 2:
        raise UsageError("--ensemble needs at least two checkpoints")
    for flag, value, least in (("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                               ("--max-images", args.max_images, 1),
                               ("--threads", args.threads or 1, 1)):  # fmt: skip
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    if args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise UsageError("--max-wait-ms must be at least 0 and --max-body-mb above 0")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1 to 65535, got {args.port}")
    try:
        from mlptrain.deploy.server import ServeSettings
        from mlptrain.deploy.server import serve as run_server
    except ImportError as exc:
        raise UsageError(f"mlp-serve needs the serve extra ({exc.name}): {INSTALL_HINT}") from None
    from mlptrain.deploy.served_model import describe, load_served_model
    from mlptrain.util.logs import get_logger, setup_logging

    setup_logging()
    settings = ServeSettings(
        models=tuple(args.ensemble or [args.model]), host=args.host, port=args.port,
        workers=args.workers, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_body_mb=args.max_body_mb, max_images=args.max_images, threads=args.threads,
    )  # fmt: skip
    model = load_served_model(settings.models, settings.threads)  # errors before the port
    model.warm_up()
    _check_port(args.host, args.port)
    get_logger().info("serving %s on http://%s:%d/", describe(model), args.host, args.port)
    run_server(settings, model)
    return 0


def _check_port(host: str, port: int) -> None:
    """A port that cannot be listened on is the user's error, said before serving."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
