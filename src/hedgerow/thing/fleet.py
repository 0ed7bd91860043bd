"""Many simulated things in one process: load tests and the power-restore storm.

``run_fleet`` starts every ``Thing`` at the same instant (as after a power cut), has each
publish from its own source every ``interval`` seconds, and reports how long it took until
all were connected. Every thing runs the full SDK (cache or discovery, mTLS, backoff, offline
queue); only the sensor is simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .core_link import Thing, ThingConfig
from .errors import ThingError
from .queue import MemoryQueue
from .readings import reading_payload
from .sensors.simulated import BME680Model, SimulatedBME680
from .sensors.vibration import VibrationModel, VibrationSimulator, encode_binary, encode_json

log = logging.getLogger(__name__)

#: ``source(now)`` returns the next payload of one thing
Source = Callable[[float], bytes]


def environment_source(
    thing: str, *, seed: int | None = None, model: BME680Model | None = None
) -> Source:
    sensor = SimulatedBME680(model, seed=seed)
    counter = iter(range(1 << 62))

    def next_payload(now: float) -> bytes:
        return reading_payload(thing, sensor.read(), now, next(counter))

    return next_payload


def vibration_source(
    thing: str,
    *,
    seed: int | None = None,
    model: VibrationModel | None = None,
    binary: bool = False,
) -> Source:
    sim = VibrationSimulator(model, seed=seed, start_time=time.time())

    def next_payload(now: float) -> bytes:
        batch = sim.next_batch()
        return encode_binary(batch) if binary else encode_json(batch, thing)

    return next_payload


@dataclass(frozen=True, slots=True)
class FleetReport:
    things: int
    connected: int
    #: seconds from the start until the last thing connected (None if some never did)
    all_connected_after: float | None
    #: seconds from the start until each thing first connected, sorted
    connect_times: tuple[float, ...]
    published: int
    delivered: int
    dropped: int
    queued: int
    connect_failures: int
    fatal: dict[str, int]

    def percentile(self, q: float) -> float | None:
        if not self.connect_times:
            return None
        index = min(
            len(self.connect_times) - 1, max(0, round(q / 100 * (len(self.connect_times) - 1)))
        )
        return self.connect_times[index]


async def run_fleet(
    configs: Sequence[ThingConfig],
    make_source: Callable[[str], Source],
    *,
    topic: str = "sensors/{thing}",
    qos: int = 1,
    interval: float = 1.0,
    messages: int = 0,
    duration: float = 0.0,
    connect_deadline: float = 0.0,
    queue_size: int = 1000,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FleetReport:
    """Run ``configs`` as things at once; stop after ``messages`` each (0: no limit) or
    ``duration`` seconds (0: no limit), after ``connect_deadline`` if not all connected by
    then, or when ``stop`` is set. With no limit at all it returns once all are connected."""
    stop = stop or asyncio.Event()
    start = time.monotonic()
    connected_at: dict[str, float] = {}
    all_connected = asyncio.Event()
    things: list[Thing] = []
    done_publishing: list[str] = []
    published = 0

    async def record_connect(thing: Thing) -> None:
        with contextlib.suppress(ThingError):
            await thing.wait_connected()
            connected_at[thing.config.thing_name] = time.monotonic() - start
            if on_progress is not None:
                on_progress(len(connected_at), len(configs))
            if len(connected_at) == len(configs):
                all_connected.set()

    async def publish_loop(thing: Thing, source: Source, thing_topic: str) -> None:
        nonlocal published
        sent = 0
        while (messages or duration) and not stop.is_set() and thing.error is None:
            if messages and sent >= messages:
                await _until(
                    stop,
                    thing.wait_until(lambda s: s.queued == 0),
                )
                return
            thing.publish(thing_topic, source(time.time()), qos)
            sent += 1
            published += 1
            await _until(stop, asyncio.sleep(interval))
        await _until(stop, thing.wait_finished())

    async def one(config: ThingConfig) -> None:
        name = config.thing_name
        try:
            async with Thing(config, queue=MemoryQueue(queue_size)) as thing:
                things.append(thing)
                watcher = asyncio.ensure_future(record_connect(thing))
                try:
                    await publish_loop(thing, make_source(name), topic.format(thing=name))
                finally:
                    watcher.cancel()
        finally:
            done_publishing.append(name)
            if len(done_publishing) == len(configs):
                stop.set()

    async def limits() -> None:
        waits: list[asyncio.Future[Any]] = []
        if duration:
            waits.append(asyncio.ensure_future(asyncio.sleep(duration)))
        if connect_deadline:
            waits.append(asyncio.ensure_future(_deadline_missed(all_connected, connect_deadline)))
        if not messages and not duration:
            waits.append(asyncio.ensure_future(all_connected.wait()))
        waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        stop.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(limits(), name="fleet.limits")
        for config in configs:
            tg.create_task(one(config), name=f"fleet.{config.thing_name}")

    fatal: dict[str, int] = {}
    for thing in things:
        if thing.error is not None:
            kind = type(thing.error).__name__
            fatal[kind] = fatal.get(kind, 0) + 1
    stats = [t.stats() for t in things]
    times = tuple(sorted(connected_at.values()))
    return FleetReport(
        things=len(configs),
        connected=len(connected_at),
        all_connected_after=times[-1] if len(times) == len(configs) and times else None,
        connect_times=times,
        published=published,
        delivered=sum(s.delivered for s in stats),
        dropped=sum(s.dropped for s in stats),
        queued=sum(s.queued for s in stats),
        connect_failures=sum(s.connect_failures for s in stats),
        fatal=fatal,
    )


async def _deadline_missed(event: asyncio.Event, seconds: float) -> None:
    """Return when ``seconds`` pass before ``event`` is set; once it is set, never return.

    All things connecting in time must not end a run that still has messages to send."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return
    await asyncio.Future()


async def _until(stop: asyncio.Event, work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` until it ends or ``stop`` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ThingError):
            await task
