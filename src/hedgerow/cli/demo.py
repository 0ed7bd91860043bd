"""``hedgerow demo``: cloud, core and a simulated thing on this machine, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hedgerow.cli import CLIError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the seed's scenario on this machine: cloud, core, simulated sensor, edge function",
        description="Start a cloud, a core and a simulated BME680 thing on this machine, deploy the "
        "temperature-correction function from the cloud, and show raw and corrected readings "
        "arriving in the cloud. Ctrl-C stops everything.",
    )
    parser.add_argument(
        "--data", type=Path, default=Path(".demo"), help="working directory (recreated)"
    )
    parser.add_argument(
        "--scenario",
        choices=("temperature", "vibration"),
        default="temperature",
        help="what to run",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after S seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--factor", type=float, default=5.0, help="the correction's FACTOR")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument(
        "--examples",
        type=Path,
        help="directory holding the example functions (default: the ones Hedgerow ships)",
    )
    ports = parser.add_argument_group(
        "ports", "each defaults to the usual port, or the next free one above it when taken"
    )
    ports.add_argument("--api-port", type=int, help="REST API and console (default 8080)")
    ports.add_argument("--device-port", type=int, help="discovery, device HTTPS (default 8443)")
    ports.add_argument("--mqtt-port", type=int, help="the cloud's MQTT endpoint (default 8884)")
    ports.add_argument("--core-port", type=int, help="the core's local MQTT (default 8883)")
    ports.add_argument(
        "--port-base",
        type=int,
        metavar="N",
        help="API N, discovery N+1, cloud MQTT N+2, core N+3 (the flags above win)",
    )
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from hedgerow.demo import Demo, DemoError, DemoOptions

    options = DemoOptions(
        data=args.data,
        scenario=args.scenario,
        duration=args.duration,
        factor=args.factor,
        interval=args.interval,
        examples=args.examples,
        ports=(
            ("api", args.api_port),
            ("device", args.device_port),
            ("mqtt", args.mqtt_port),
            ("core", args.core_port),
        ),
        port_base=args.port_base,
    )
    try:
        return Demo(options, lambda text: print(text, flush=True)).run()
    except DemoError as exc:
        raise CLIError(str(exc)) from exc
    except KeyboardInterrupt:
        print("stopped; every process the demo started has been stopped")
        return 0
