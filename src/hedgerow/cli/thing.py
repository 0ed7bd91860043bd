"""``hedgerow thing run`` and ``hedgerow thing simulate``: a device, or a fleet of simulated ones.

``run`` takes the flags of the seed's ``greengrass_thing.py`` (``-e -r -c -k -id -t``): it
discovers the thing's core through the cloud, connects with mutual TLS against the group CA
and publishes a JSON reading every ``--interval`` seconds. ``simulate`` runs N simulated
things in one process (``--certs DIR`` holds ``NAME.cert.pem`` and ``NAME.key`` for each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

from hedgerow.cli import CLIError
from hedgerow.cli.output import add_json_flag, print_json, print_json_line
from hedgerow.thing import (
    BackoffPolicy,
    Credentials,
    DropPolicy,
    Jitter,
    MemoryQueue,
    OfflineQueue,
    SqliteQueue,
    Thing,
    ThingConfig,
    ThingError,
)
from hedgerow.thing.cache import default_directory, file_name
from hedgerow.thing.core_link import ThingStats
from hedgerow.thing.discovery import discover, parse_endpoint
from hedgerow.thing.fleet import FleetReport, environment_source, run_fleet, vibration_source
from hedgerow.thing.readings import reading_payload
from hedgerow.thing.sensors import SENSOR_KINDS, BME680Model, open_sensor
from hedgerow.thing.sensors.base import Sensor
from hedgerow.thing.sensors.vibration import Fault, VibrationModel


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "thing", help="run a device (thing) or a fleet of simulated ones", description=__doc__
    )
    commands = parser.add_subparsers(dest="thing_command", metavar="COMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))

    run = commands.add_parser(
        "run",
        help="discover the core, connect, publish sensor readings",
        description="Discover this thing's core through the cloud, connect to it with mutual TLS "
        "and publish a JSON reading every --interval seconds.",
    )
    _connection_flags(run, claim=True)
    run.add_argument("-c", "--cert", dest="cert", help="the thing's certificate (PEM)")
    run.add_argument("-k", "--key", dest="key", help="the thing's private key (PEM)")
    run.add_argument("-id", "--clientId", dest="client_id", help="client id = thing name")
    _claim_flags(run)
    run.add_argument(
        "-t",
        "--topic",
        dest="topic",
        default="sensors/{thing}",
        help="topic (default sensors/{thing})",
    )
    run.add_argument(
        "--sensor",
        choices=SENSOR_KINDS,
        default="auto",
        help="auto: the BME680 if present, else simulated",
    )
    run.add_argument(
        "--queue",
        choices=("memory", "disk"),
        default="memory",
        help="offline queue (disk survives reboots)",
    )
    run.add_argument(
        "--count",
        type=int,
        default=0,
        help="publish this many readings, deliver them, exit (0: forever)",
    )
    run.add_argument("--quiet", action="store_true", help="do not print each reading")
    add_json_flag(run, "report as JSON Lines on stdout (one object per event)")
    run.set_defaults(func=cmd_run)

    provision = commands.add_parser(
        "provision", help="provision this device with a claim credential, then stop"
    )
    provision.add_argument("--claim", type=Path, required=True, help="claim.tar.gz")
    provision.add_argument("--serial", help="serial number (default: the host name)")
    provision.add_argument(
        "--identity-dir", type=Path, required=True, help="where the identity is written"
    )
    provision.add_argument("--timeout", type=float, default=120.0)
    provision.set_defaults(func=cmd_provision)
    disc = commands.add_parser(
        "discover",
        help="ask the cloud for this thing's cores and group CAs (and nothing else)",
        description="Run discovery as `thing run` does and print the cores, their addresses "
        "and the group CAs: a quick check of the certificate, the endpoint and the group.",
    )
    disc.add_argument("-e", "--endpoint", required=True, help="the cloud's discovery host[:port]")
    disc.add_argument("-r", "--rootCA", dest="root_ca", required=True, help="the cloud's root CA")
    disc.add_argument("-c", "--cert", required=True, help="the thing's certificate (PEM)")
    disc.add_argument("-k", "--key", required=True, help="the thing's private key (PEM)")
    disc.add_argument("-id", "--clientId", dest="client_id", required=True, help="thing name")
    disc.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    add_json_flag(disc, "print the discovery answer (the V1 response body) as JSON")
    disc.set_defaults(func=cmd_discover)

    sim = commands.add_parser(
        "simulate",
        help="run N simulated things in one process (load and storm tests)",
        description="Run N simulated things at once, each with its own certificate "
        "(--certs DIR/NAME.cert.pem and NAME.key), and report how they connected.",
    )
    _connection_flags(sim)
    sim.add_argument("--count", type=int, required=True, help="how many things")
    sim.add_argument(
        "--certs", required=True, help="directory with NAME.cert.pem and NAME.key per thing"
    )
    sim.add_argument(
        "--prefix", default="sim", help="thing names are PREFIX-1 … PREFIX-N (default sim)"
    )
    sim.add_argument(
        "-t", "--topic", default="sensors/{thing}", help="topic template (default sensors/{thing})"
    )
    sim.add_argument(
        "--kind", choices=("env", "vibration"), default="env", help="what the things measure"
    )
    sim.add_argument(
        "--messages", type=int, default=0, help="messages per thing, then exit (0: no limit)"
    )
    sim.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="run this long (s); with neither limit: until all connected",
    )
    sim.add_argument(
        "--sample-rate", type=float, default=10_000.0, help="vibration sample rate (Hz)"
    )
    sim.add_argument("--batch", type=int, default=1000, help="vibration samples per message")
    sim.add_argument(
        "--fault",
        choices=[f.value for f in Fault],
        default="none",
        help="bearing fault to simulate",
    )
    sim.add_argument(
        "--binary", action="store_true", help="vibration as compact binary frames, not JSON"
    )
    add_json_flag(sim, "print the summary as JSON")
    sim.set_defaults(func=cmd_simulate)


def _claim_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--claim",
        type=Path,
        help="claim credential (claim.tar.gz): provision on first boot, then run as that thing "
        "(replaces -e, -r, -c, -k and -id)",
    )
    p.add_argument("--serial", help="serial number sent with --claim (default: the host name)")
    p.add_argument(
        "--identity-dir",
        type=Path,
        help="where the claimed identity is kept (default: the state directory)",
    )


def _connection_flags(p: argparse.ArgumentParser, *, claim: bool = False) -> None:
    p.add_argument(
        "-e",
        "--endpoint",
        dest="endpoint",
        required=not claim,
        help="the cloud's discovery host[:port] (default port 8443)",
    )
    p.add_argument(
        "-r", "--rootCA", dest="root_ca", required=not claim, help="the cloud's root CA (PEM)"
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between readings (default 1)"
    )
    p.add_argument(
        "--qos", type=int, choices=(0, 1), default=1, help="MQTT QoS of the readings (default 1)"
    )
    p.add_argument(
        "--state-dir", help=f"connection-info cache and disk queue (default {default_directory()})"
    )
    p.add_argument("--queue-size", type=int, default=10_000, help="offline queue bound (messages)")
    p.add_argument(
        "--drop", choices=("oldest", "newest"), default="oldest", help="what a full queue drops"
    )
    p.add_argument("--backoff-base", type=float, default=1.0, help="first retry ceiling (s)")
    p.add_argument("--backoff-cap", type=float, default=32.0, help="largest retry delay (s)")
    p.add_argument(
        "--stable-after",
        type=float,
        default=20.0,
        help="connected this long resets the backoff (s)",
    )
    p.add_argument(
        "--spread", type=float, default=0.0, help="random delay before the first attempt, up to S s"
    )
    p.add_argument(
        "--no-jitter",
        action="store_true",
        help="the V1 SDK's schedule (1, 2, 4 … s): for comparison only",
    )
    p.add_argument(
        "--give-up",
        type=float,
        default=0.0,
        help="exit with an error if not connected within S s (0: keep trying)",
    )
    p.add_argument(
        "--factor",
        type=float,
        default=5.0,
        help="simulated sensor: the CPU-heat factor its placement has",
    )
    p.add_argument("--seed", type=int, default=None, help="simulator random seed")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---- building blocks --------------------------------------------------------------------


def _policy(args: argparse.Namespace) -> BackoffPolicy:
    try:
        return BackoffPolicy(
            base=args.backoff_base,
            cap=args.backoff_cap,
            stable_after=args.stable_after,
            jitter=Jitter.NONE if args.no_jitter else Jitter.FULL,
            initial=args.spread,
        )
    except ValueError as exc:
        raise CLIError(f"bad backoff settings: {exc}") from exc


def _check_common(args: argparse.Namespace) -> Path:
    try:
        parse_endpoint(args.endpoint)
    except ValueError as exc:
        raise CLIError(f"{exc}; give -e as host or host:port of the cloud") from exc
    if args.interval <= 0:
        raise CLIError("--interval must be positive")
    if args.queue_size < 1:
        raise CLIError("--queue-size must be at least 1")
    return Path(args.state_dir) if args.state_dir else default_directory()


def _credentials(root_ca: str, cert: str, key: str) -> Credentials:
    try:
        return Credentials.load(root_ca, cert, key)
    except ThingError as exc:
        raise CLIError(exc.one_line()) from exc


def _make_queue(args: argparse.Namespace, state: Path, thing: str) -> OfflineQueue:
    policy = DropPolicy.OLDEST if args.drop == "oldest" else DropPolicy.NEWEST
    if getattr(args, "queue", "memory") == "disk":
        path = state / (file_name(thing).removesuffix(".json") + ".queue.db")
        try:
            return SqliteQueue(path, args.queue_size, policy)
        except (OSError, sqlite3.Error) as exc:
            raise CLIError(f"cannot open the disk queue {path}: {exc}; check --state-dir") from exc
    return MemoryQueue(args.queue_size, policy)


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# ---- hedgerow thing run -----------------------------------------------------------------


def _claimed(args: argparse.Namespace) -> None:
    """``--claim``: provision once, then fill in the flags the identity answers."""
    from hedgerow.thing.provision import provision_thing

    directory = args.identity_dir or (
        Path(args.state_dir) if args.state_dir else default_directory()
    )
    serial = args.serial or socket.gethostname().split(".")[0]
    try:
        identity = asyncio.run(provision_thing(args.claim, directory, serial))
    except ThingError as exc:
        raise CLIError(exc.one_line()) from exc
    args.endpoint = args.endpoint or identity.endpoint
    args.root_ca = args.root_ca or str(identity.root_ca)
    args.cert, args.key = str(identity.cert), str(identity.key)
    args.client_id = identity.name
    print(f"thing {identity.name} (group {identity.group}) from {directory}", flush=True)


def cmd_provision(args: argparse.Namespace) -> int:
    from hedgerow.thing.provision import provision_thing

    serial = args.serial or socket.gethostname().split(".")[0]
    try:
        identity = asyncio.run(
            provision_thing(args.claim, args.identity_dir, serial, timeout=args.timeout)
        )
    except ThingError as exc:
        raise CLIError(exc.one_line()) from exc
    print(f"thing {identity.name} provisioned in group {identity.group}: {identity.cert}")
    print(
        f"run it: hedgerow thing run -e {identity.endpoint} -r {identity.root_ca} "
        f"-c {identity.cert} -k {identity.key} -id {identity.name}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.claim is not None:
        _claimed(args)
    elif not (args.cert and args.key and args.client_id and args.endpoint and args.root_ca):
        raise CLIError("give -e, -r, -c, -k and -id (or --claim claim.tar.gz)")
    state = _check_common(args)
    credentials = _credentials(args.root_ca, args.cert, args.key)
    if args.count < 0:
        raise CLIError("--count must not be negative")
    try:
        sensor = open_sensor(args.sensor, seed=args.seed, model=BME680Model(factor=args.factor))
    except ThingError as exc:
        raise CLIError(exc.one_line()) from exc
    except ValueError as exc:
        raise CLIError(f"{exc}") from exc
    config = ThingConfig(
        thing_name=args.client_id,
        discovery_endpoint=args.endpoint,
        credentials=credentials,
        cache_dir=state,
        backoff=_policy(args),
    )
    queue = _make_queue(args, state, args.client_id)
    try:
        return asyncio.run(_run(args, config, queue, sensor))
    finally:
        sensor.close()


async def _run(
    args: argparse.Namespace, config: ThingConfig, queue: OfflineQueue, sensor: Sensor
) -> int:
    stop = asyncio.Event()
    _install_stop(stop)
    topic = args.topic.format(thing=config.thing_name)
    started = time.monotonic()
    async with Thing(config, queue=queue) as thing, _reporting(thing, args):
        sequence = 0
        while not stop.is_set():
            _check_alive(thing, args.give_up, started)
            if args.count and sequence >= args.count:
                await _deliver_all(thing, stop, args.give_up, started)
                break
            reading = await asyncio.to_thread(sensor.read)
            payload = reading_payload(config.thing_name, reading, time.time(), sequence)
            try:
                accepted = thing.publish(topic, payload, args.qos)
            except ThingError as exc:  # the thing stopped while the sensor was read
                _check_alive(thing, args.give_up, started)
                raise CLIError(exc.one_line()) from exc
            if not accepted:
                _event(
                    args, "dropped", f"queue full: dropped reading {sequence}", sequence=sequence
                )
            elif not args.quiet:
                # "queued" until the core acknowledged it: delivery is reported separately
                state = "queued" if thing.is_connected else "queued (not connected)"
                _event(args, "queued", f"{state} {topic} {payload.decode()}", sys.stdout,
                       topic=topic, connected=thing.is_connected, reading=json.loads(payload))  # fmt: skip
            sequence += 1
            if not args.count or sequence < args.count:
                await _pause(thing, stop, args.interval)
        stats = thing.stats()
    if not args.quiet:
        _event(
            args,
            "stopped",
            f"stopped: {stats.delivered} delivered, {stats.queued} still queued, {stats.dropped} dropped",
            delivered=stats.delivered,
            queued=stats.queued,
            dropped=stats.dropped,
        )
    return 0


def _event(
    args: argparse.Namespace, kind: str, text: str, stream: TextIO | None = None, **data: Any
) -> None:
    """One thing that happened: a line for people (on ``stream``, default stderr), or with
    ``--json`` one JSON object on stdout (``{"event": kind, ...data}``)."""
    if args.json:
        print_json_line({"event": kind, **data})
    else:
        print(text, file=stream or sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def _reporting(thing: Thing, args: argparse.Namespace) -> AsyncIterator[None]:
    """Tell the user what the connection does while readings are taken: connected, why not
    (with what fixes it), and how many readings the core acknowledged."""
    task = asyncio.create_task(_report(thing, args), name="thing.report")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _report(thing: Thing, args: argparse.Namespace) -> None:
    last = thing.stats()
    reported = 0
    while True:
        try:
            now = await thing.wait_until(_changed_from(last))
        except ThingError:
            return  # the thing stopped: the command reports why
        if now.connected and not last.connected:
            _event(args, "connected", f"connected to the core at {now.endpoint}",
                   endpoint=str(now.endpoint))  # fmt: skip
        elif (
            now.last_error
            and now.last_error != last.last_error
            and not now.connected
            and thing.error is None  # a fatal error: the command reports it as it exits
        ):
            _event(args, "not_connected", f"not connected: {now.last_error} (retrying)",
                   error=str(now.last_error))  # fmt: skip
        backlog_drained = now.queued == 0 and now.delivered - reported > 1
        if not args.quiet and (
            backlog_drained or now.delivered - reported >= DELIVERY_REPORT_EVERY
        ):
            _event(
                args,
                "delivered",
                f"delivered {now.delivered} (acknowledged by the core), {now.queued} queued",
                delivered=now.delivered,
                queued=now.queued,
            )
            reported = now.delivered
        last = now


def _changed_from(last: ThingStats) -> Callable[[ThingStats], bool]:
    seen = (last.connected, last.last_error, last.delivered)
    return lambda s: (s.connected, s.last_error, s.delivered) != seen


#: while readings flow, report deliveries every this many
DELIVERY_REPORT_EVERY = 10


def _check_alive(thing: Thing, give_up: float, started: float) -> None:
    if thing.error is not None:
        raise CLIError(thing.error.one_line())
    if give_up and thing.connects == 0 and time.monotonic() - started > give_up:
        reason = thing.last_error or "no answer"
        raise CLIError(f"not connected after {give_up:g} s: {reason}")


async def _deliver_all(thing: Thing, stop: asyncio.Event, give_up: float, started: float) -> None:
    """--count: wait until every reading was delivered (or Ctrl-C, or --give-up)."""
    limit = (
        max(0.0, started + give_up - time.monotonic()) if give_up and thing.connects == 0 else None
    )
    drained = asyncio.ensure_future(thing.wait_until(lambda s: s.queued == 0))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([drained, stopper], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        drained.cancel()
    with contextlib.suppress(asyncio.CancelledError, ThingError):
        await drained
    if thing.error is not None:
        raise CLIError(thing.error.one_line())
    if thing.stats().queued and not stop.is_set():
        raise CLIError(f"not connected after {give_up:g} s: {thing.last_error or 'no answer'}")


async def _pause(thing: Thing, stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if the thing stops or connects/fails (state changes)."""
    stopper = asyncio.ensure_future(stop.wait())
    finished = asyncio.ensure_future(thing.wait_finished())
    try:
        await asyncio.wait(
            [stopper, finished], timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopper.cancel()
        finished.cancel()


# ---- hedgerow thing simulate ------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    state = _check_common(args)
    if args.count < 1:
        raise CLIError("--count must be at least 1")
    certs = Path(args.certs)
    if not certs.is_dir():
        raise CLIError(
            f"--certs {certs} is not a directory; give the folder with NAME.cert.pem and NAME.key"
        )
    names = [f"{args.prefix}-{i}" for i in range(1, args.count + 1)]
    policy = _policy(args)
    configs = []
    for name in names:
        credentials = _credentials(
            args.root_ca, str(certs / f"{name}.cert.pem"), str(certs / f"{name}.key")
        )
        configs.append(
            ThingConfig(name, args.endpoint, credentials, cache_dir=state, backoff=policy)
        )
    try:
        vib_model = VibrationModel(
            sample_rate=args.sample_rate, batch_size=args.batch, fault=Fault(args.fault)
        )
    except ValueError as exc:
        raise CLIError(f"bad vibration settings: {exc}") from exc
    env_model = BME680Model(factor=args.factor)

    def make_source(name: str) -> Any:
        seed = None if args.seed is None else args.seed + names.index(name)
        if args.kind == "vibration":
            return vibration_source(name, seed=seed, model=vib_model, binary=args.binary)
        return environment_source(name, seed=seed, model=env_model)

    report = asyncio.run(_simulate(args, configs, make_source))
    if args.json:
        print_json(_report_data(report))
    else:
        print(_report_text(report))
    if report.fatal:
        kinds = ", ".join(f"{n} x {kind}" for kind, n in report.fatal.items())
        raise CLIError(
            f"some things stopped for good ({kinds}); run one with 'hedgerow thing run' to see why"
        )
    if args.give_up and report.connected < report.things:
        raise CLIError(
            f"only {report.connected} of {report.things} things connected within {args.give_up:g} s"
        )
    return 0


async def _simulate(
    args: argparse.Namespace, configs: list[ThingConfig], make_source: Any
) -> FleetReport:
    stop = asyncio.Event()
    _install_stop(stop)
    return await run_fleet(
        configs,
        make_source,
        topic=args.topic,
        qos=args.qos,
        interval=args.interval,
        messages=args.messages,
        duration=args.duration,
        connect_deadline=args.give_up,
        queue_size=args.queue_size,
        stop=stop,
    )


def _report_data(report: FleetReport) -> dict[str, Any]:
    return {
        "things": report.things,
        "connected": report.connected,
        "all_connected_after": report.all_connected_after,
        "median_connect": report.percentile(50),
        "connect_failures": report.connect_failures,
        "published": report.published,
        "delivered": report.delivered,
        "queued": report.queued,
        "dropped": report.dropped,
        "fatal": dict(report.fatal),
    }


def _report_text(report: FleetReport) -> str:
    after = (
        f"{report.all_connected_after:.2f} s" if report.all_connected_after is not None else "never"
    )
    p50 = report.percentile(50)
    median = f"{p50:.2f} s" if p50 is not None else "-"
    return (
        f"things: {report.things}  connected: {report.connected}  all connected after: {after}  "
        f"median: {median}  connect failures: {report.connect_failures}\n"
        f"published: {report.published}  delivered: {report.delivered}  "
        f"queued: {report.queued}  dropped: {report.dropped}"
    )


# ---- hedgerow thing discover ------------------------------------------------------------


def cmd_discover(args: argparse.Namespace) -> int:
    try:
        parse_endpoint(args.endpoint)
    except ValueError as exc:
        raise CLIError(f"{exc}; give -e as host or host:port of the cloud") from exc
    credentials = _credentials(args.root_ca, args.cert, args.key)
    try:
        info = asyncio.run(
            discover(args.endpoint, args.client_id, credentials, request_timeout=args.timeout)
        )
    except ThingError as exc:
        raise CLIError(exc.one_line()) from exc
    if args.json:
        print_json(info.to_json())
        return 0
    for group in info.groups:
        print(f"group {group.group_id}: {len(group.cas)} CA certificate(s)")
        for core in group.cores:
            addresses = ", ".join(str(e) for e in core.endpoints) or "(no addresses yet)"
            print(f"  core {core.name}: {addresses}")
    if not info.groups:
        print("no groups: add the thing to a group with a core (hedgerow cloud thing attach)")
    return 0
