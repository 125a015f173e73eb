"""The ``plano-extproc`` command: validate, render-envoy, serve, up, envoy, route."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from .envoy_config import EnvoyOptions
    from .envoy_runner import DrainPolicy

DEFAULT_EXTPROC_PORT = 10000

# grpcio's fork support re-arms gRPC in a child that forks without exec; nothing here does
# (processes.spawn execs at once and runs none of our code between fork and exec), and its
# fork handlers, run in a child that is about to exec, once killed a few of the launcher's
# children (test_processes.py). Off, unless the user set it. grpcio reads it when it is first
# imported, which every command does after this module is loaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid config ({len(exc.errors)} problem(s)):", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    if getattr(args, "keyless", False):
        # Envoy never holds a provider key (the server hands it one per request): in its own
        # container the key variables are not set, as they should not be.
        from .explain import with_stand_in_keys

        config = with_stand_in_keys(config)
    # validate prints them in its summary; `up` has printed them already for `serve`.
    if not getattr(args, "quiet_warnings", False) and args.run is not _validate:
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    result: int = args.run(config, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plano-extproc", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run: object, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("config", type=Path, help="the plano config (YAML)")
        sub.set_defaults(run=run)
        return sub

    command("validate", _validate, "check a config; print its providers, aliases and routes")
    render = command("render-envoy", _render, "print the Envoy bootstrap for a config")
    render.add_argument("-o", "--output", type=Path, help="write it here instead of stdout")
    _envoy_options(render)
    serve = command("serve", _serve, "run the ext_proc gRPC server alone")
    serve.add_argument(
        "--listen",
        default=f"127.0.0.1:{DEFAULT_EXTPROC_PORT}",
        help="HOST:PORT to serve gRPC on (default %(default)s)",
    )
    serve.add_argument(
        "--health-listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve the gRPC health service, and only it, here (e.g. 0.0.0.0:10001 for "
        "Kubernetes' grpc probe, while --listen stays on 127.0.0.1: ext_proc answers carry "
        "provider keys)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=None,
        help="on SIGTERM: report NOT_SERVING and serve on until Envoy's connections have gone "
        "or this many seconds passed (default 25), then finish the calls in flight and exit",
    )
    serve.add_argument(
        "--decision-headers",
        action="store_true",
        help="also put the decision in request headers, for a mesh ingress's own route table "
        "(x-plano-provider, x-plano-upstream, the provider's key: README, 'At a mesh ingress')",
    )
    serve.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics: the server's own, then "
        "Envoy's stats when --envoy-admin names its admin API (README, 'Metrics')",
    )
    serve.add_argument(
        "--envoy-admin",
        default=None,
        metavar="SOCKET|127.0.0.1:PORT",
        help="where Envoy's admin API is, to add its /stats/prometheus to the metrics (that "
        "one GET is all the endpoint forwards)",
    )
    serve.add_argument(
        "--no-watch",
        action="store_true",
        help="reload the config on SIGHUP only, not when its file or a key file changes "
        "(up tells its servers when, once Envoy has the change)",
    )
    _engine_option(serve)
    # `up` has printed the config's warnings already.
    serve.add_argument("--quiet-warnings", action="store_true", help=argparse.SUPPRESS)
    up = command("up", _up, "run the gateway: the ext_proc server and Envoy, in the foreground")
    _envoy_options(up)
    up.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="the gateway's Prometheus metrics at http://HOST:PORT/metrics: the servers' and "
        "Envoy's, one endpoint whatever --workers is (README, 'Metrics'; default: none)",
    )
    _engine_option(up)
    _envoy_process_options(up)
    envoy = command(
        "envoy",
        _envoy,
        "run Envoy alone for a config, in the foreground, in front of an ext_proc server "
        "started elsewhere (plano-extproc serve); a graceful stop on SIGTERM",
    )
    envoy.set_defaults(keyless=True)
    _envoy_options(envoy)
    _envoy_process_options(envoy)
    route = command(
        "route",
        _route,
        "read JSON lines {messages, model?} on stdin; write each routing decision as a JSON line",
    )
    route.add_argument(
        "--explain", action="store_true", help="add what the router read and how it weighed it"
    )
    route.add_argument(
        "--api",
        choices=("openai", "anthropic"),
        default="openai",
        help="the API of the request lines: OpenAI chat completions (the default) or "
        "Anthropic Messages",
    )
    return parser


def _engine_option(parser: argparse.ArgumentParser) -> None:
    from .extproc.server import ENGINES

    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=ENGINES[0],
        help="the gRPC transport: h2 (lean, the default) or grpcio (grpc.aio), for comparison",
    )


def _envoy_process_options(parser: argparse.ArgumentParser) -> None:
    from .envoy_runner import DEFAULT_DRAIN_S

    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="Envoy worker threads (default: Envoy's, one per core)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=_non_negative(float),
        default=DEFAULT_DRAIN_S,
        help="on SIGTERM/SIGINT, the longest Envoy's graceful stop may take: it stops accepting "
        "connections and waits for the requests in flight (long streams too); what is left "
        "then is cut (default %(default)g)",
    )
    parser.add_argument(
        "--drain-accept-seconds",
        type=_non_negative(int),
        default=0,
        help="keep accepting new connections this long after SIGTERM (each answered with "
        "connection: close) before the listener closes; for a gateway behind a Service, whose "
        "endpoints take a moment to drop a stopping pod (default %(default)s: refused at once)",
    )


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _envoy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--extproc-port",
        type=int,
        default=DEFAULT_EXTPROC_PORT,
        help="port of the ext_proc server on 127.0.0.1 (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="ext_proc server processes, on --extproc-port and the ports after it; Envoy "
        "spreads requests over them round robin (default %(default)s)",
    )
    admin = parser.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-socket",
        default=None,
        help="Envoy's admin API on this Unix socket, owner-only (default: `up` and `envoy` put "
        "it in their private temporary folder; render-envoy names /tmp/plano-envoy-admin.sock)",
    )
    admin.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="Envoy's admin API on 127.0.0.1:PORT instead: any local process can then reach "
        "it (raise the log level, stop Envoy); prefer the socket",
    )
    parser.add_argument(
        "--message-timeout",
        type=float,
        default=5.0,
        help="seconds Envoy waits for each ext_proc answer (default %(default)s)",
    )
    parser.add_argument(
        "--ready-port",
        type=int,
        default=None,
        help="also listen on --ready-address:PORT for GET /ready (Envoy's admin /ready: 200 "
        "LIVE, 503 while starting or stopping), the one admin path it serves, for Kubernetes' "
        "probes (default: no such listener)",
    )
    parser.add_argument(
        "--ready-address",
        default="0.0.0.0",
        help="the address of the --ready-port listener (default %(default)s; :: for IPv6)",
    )
    parser.add_argument(
        "--request-stats",
        action="store_true",
        help="keep Envoy's per-request stats by decision (envoy_plano_requests...) for the "
        "metrics endpoint; up --metrics-listen turns them on (README, 'Metrics')",
    )
    parser.add_argument(
        "--token-stats",
        action="store_true",
        help="with the per-request stats, count the tokens providers' JSON answers report, "
        "by model (Envoy reads each answer: it costs; README, 'Metrics')",
    )
    parser.add_argument(
        "--access-log",
        default="/dev/stdout",
        metavar="PATH|off",
        help="the file Envoy writes one JSON line per request to (README, 'Access log'); "
        "'off' for none (default %(default)s)",
    )


def _validate(config: Config, args: argparse.Namespace) -> int:
    from .summary import summarize

    print(summarize(config))
    return 0


def _render(config: Config, args: argparse.Namespace) -> int:
    from .envoy_config import render_yaml

    text = render_yaml(config, _options(args))
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from .extproc.server import DEFAULT_DRAIN_S, ServeOptions, serve
    from .router import RouterLoadError

    options = ServeOptions(
        listen=args.listen,
        engine=args.engine,
        health_listen=args.health_listen,
        drain_s=DEFAULT_DRAIN_S if args.drain_seconds is None else args.drain_seconds,
        decision_headers=args.decision_headers,
        watch=not args.no_watch,
        metrics_listen=args.metrics_listen,
        envoy_admin=args.envoy_admin,
    )
    try:
        asyncio.run(serve(config, options))
    except RouterLoadError as exc:
        print(f"error: cannot load the router: {exc}", file=sys.stderr)
        return 1
    return 0


def _route(config: Config, args: argparse.Namespace) -> int:
    from .explain import route_lines, with_stand_in_keys
    from .router import RouterLoadError

    config = with_stand_in_keys(config)  # its unset keys were warned about already
    try:
        from .apis import ANTHROPIC_MESSAGES, OPENAI_CHAT

        api = ANTHROPIC_MESSAGES if args.api == "anthropic" else OPENAI_CHAT
        return asyncio.run(
            route_lines(config, sys.stdin, sys.stdout, explain=args.explain, api=api)
        )
    except RouterLoadError as exc:
        print(f"error: cannot load the router: {exc}", file=sys.stderr)
        return 1


def _up(config: Config, args: argparse.Namespace) -> int:
    from .launcher import run_gateway

    return run_gateway(
        config,
        _options(args),
        concurrency=args.concurrency,
        engine=args.engine,
        drain=_drain(args),
        metrics_listen=args.metrics_listen,
    )


def _envoy(config: Config, args: argparse.Namespace) -> int:
    from .envoy_runner import run_envoy

    return run_envoy(config, _options(args), concurrency=args.concurrency, drain=_drain(args))


def _drain(args: argparse.Namespace) -> DrainPolicy:
    from .envoy_runner import DrainPolicy

    if args.drain_accept_seconds > args.drain_seconds:
        raise SystemExit(
            "plano-extproc: --drain-accept-seconds must not exceed --drain-seconds "
            f"({args.drain_accept_seconds} > {args.drain_seconds:g})"
        )
    return DrainPolicy(seconds=args.drain_seconds, accept_seconds=args.drain_accept_seconds)


def _options(args: argparse.Namespace) -> EnvoyOptions:
    from .envoy_config import EnvoyOptions, system_ca_bundle

    return EnvoyOptions(
        extproc=tuple(("127.0.0.1", args.extproc_port + i) for i in range(args.workers)),
        admin_socket=args.admin_socket,
        admin_port=args.admin_port,
        message_timeout_s=args.message_timeout,
        ca_bundle=system_ca_bundle(),
        ready_port=args.ready_port,
        ready_address=args.ready_address,
        decision_stats=args.request_stats or getattr(args, "metrics_listen", None) is not None,
        token_stats=args.token_stats,
        access_log=None if args.access_log == "off" else args.access_log,
    )
