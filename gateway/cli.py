"""The `gateway` command: demo, serve, simulate, schema, proto."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from gateway.config import Settings, SettingsError, load_settings
from gateway.infra.listener import bind_listener

SCHEMA_PATH = Path("schema/schema.graphql")


def _schema(args: argparse.Namespace) -> int:
    from gateway.graphql.schema import sdl

    text = sdl()
    path = Path(args.path)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run `gateway schema --write`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    sys.stdout.write(text)
    return 0


def _proto(args: argparse.Namespace) -> int:
    from gateway.grpc.codegen import OUT_DIR, CodegenError, stale, write

    try:
        if args.check:
            outdated = stale()
            if outdated:
                names = ", ".join(outdated)
                print(f"{OUT_DIR} is out of date ({names}): run `gateway proto`", file=sys.stderr)
                return 1
            print(f"{OUT_DIR} is up to date")
            return 0
        written = write()
    except CodegenError as exc:
        print(f"gateway proto: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files into {OUT_DIR}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.observability.logs import configure_logging

    settings = load_settings()
    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        print("gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return _serve_one(settings, args.log_level)

    from gateway.process.supervisor import reserve_port, supervise

    # Both ports are chosen here once (port 0 too) and held: every worker listens on them
    # with a socket of its own (SO_REUSEPORT), and the kernel spreads the connections.
    held: list[socket.socket] = []
    try:
        for what, port in (("", settings.http_port), (" (gRPC)", settings.grpc_port)):
            try:
                held.append(reserve_port(settings.host, port))
            except OSError as exc:
                print(f"gateway: cannot listen on {settings.host}:{port}{what}: {exc.strerror}",
                      file=sys.stderr)  # fmt: skip
                return 2
        http_port, grpc_port = (sock.getsockname()[1] for sock in held)
        settings = settings.model_copy(update={"http_port": http_port, "grpc_port": grpc_port})
        host = held[0].getsockname()[0]

        def banner() -> None:
            # Printed once a worker listens: a client may connect as soon as it reads it.
            print(f"Gateway listening on http://{host}:{http_port}/graphql "
                  f"({workers} workers, gRPC on {host}:{grpc_port})", flush=True)  # fmt: skip

        def all_serving() -> None:
            print(f"All {workers} workers serving", flush=True)

        configure_logging(json=True, level=args.log_level.upper())
        return supervise(
            settings,
            workers=workers,
            log_level=args.log_level,
            on_serving=banner,
            on_all_serving=all_serving,
        )
    finally:
        for sock in held:
            sock.close()


def _serve_one(settings: Settings, log_level: str) -> int:
    from gateway.observability.logs import configure_logging
    from gateway.process.serve import serve_on

    # Bound before the banner, so it names the real port (GATEWAY_HTTP_PORT=0 picks a free
    # one) and a client may connect as soon as it reads it.
    try:
        listener = bind_listener(settings.host, settings.http_port)
    except OSError as exc:
        print(f"gateway: cannot listen on {settings.host}:{settings.http_port}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 2
    host, port = listener.getsockname()[:2]
    print(f"Gateway listening on http://{host}:{port}/graphql", flush=True)
    configure_logging(json=True, level=log_level.upper())
    serve_on(settings, listener, log_level=log_level)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from gateway.simulator import Simulator

    async def run() -> None:
        simulator = Simulator(
            seed=args.seed, latency_ms=args.latency_ms, move_every_s=args.move_every or None
        )
        stop = asyncio.Event()
        # Handled explicitly: a process started in the background inherits an ignored SIGINT.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with simulator.serve(host=args.host, port=args.port) as running:
            print(f"Simulator listening on {running.base_url}")
            print(f"  V3:     {running.v3_url}   (token: {running.token_url})")
            print(f"  legacy: {running.legacy_url}")
            print(f"  controls and catalog: {running.base_url}/_sim/catalog")
            print("Press Ctrl-C to stop.", flush=True)
            await stop.wait()
        print("Stopped.", flush=True)

    asyncio.run(run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.process.demo import DemoError, run_demo

    try:
        asyncio.run(
            run_demo(
                host=args.host,
                port=args.port,
                grpc_port=args.grpc_port,
                sim_port=args.sim_port,
                move_every_s=args.move_every or None,
            )
        )
    except DemoError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the gateway took over the signals
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Listing Status Gateway: one view of listing status."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the simulator and the gateway wired to it")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000, help="gateway HTTP port (0: any free)")
    demo.add_argument("--grpc-port", type=int, default=50051, help="gRPC port (0: any free)")
    demo.add_argument("--sim-port", type=int, default=0, help="simulator port (0: any free)")
    demo.add_argument(
        "--move-every", type=float, default=5.0, help="seconds between listing updates (0: never)"
    )
    demo.set_defaults(run=_demo)

    serve = commands.add_parser(
        "serve", help="serve against the real upstreams (GATEWAY_* settings)"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the ports (default: GATEWAY_WORKERS, 1)",
    )
    serve.set_defaults(run=_serve)

    simulate = commands.add_parser("simulate", help="the upstream simulator alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8100)
    simulate.add_argument("--latency-ms", type=float, default=0.0)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--move-every", type=float, default=0.0, help="seconds (0: never)")
    simulate.set_defaults(run=_simulate)

    schema = commands.add_parser("schema", help="print the GraphQL SDL")
    schema.add_argument("--check", action="store_true", help="fail if the checked-in SDL is stale")
    schema.add_argument("--write", action="store_true", help="write the SDL to --path")
    schema.add_argument("--path", default=str(SCHEMA_PATH))
    schema.set_defaults(run=_schema)

    proto = commands.add_parser(
        "proto", help="regenerate the gRPC stubs from schema/listing_status.proto"
    )
    proto.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    proto.set_defaults(run=_proto)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"gateway: bad setting: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
