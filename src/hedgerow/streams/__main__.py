"""``python -m hedgerow.streams --dir DIR [--port 8088] [--token-env VAR]``: the stream manager
alone, without a core (for development and the crash tests). Prints ``listening HOST PORT``
once it serves; stops on SIGTERM or SIGINT. The token is read from the environment variable
named by ``--token-env`` (default ``AWS_CONTAINER_AUTHORIZATION_TOKEN``), never from argv."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .manager import StreamManager, StreamsSettings
from .server import DEFAULT_PORT, StreamServer, allow_token


async def _main(args: argparse.Namespace) -> int:
    token = os.environ.get(args.token_env)
    if not token:
        sys.stderr.write(f"set {args.token_env} to the token clients must present\n")
        return 2
    settings = StreamsSettings(
        directory=Path(args.dir), max_bytes=args.max_bytes, fsync_interval=args.fsync_interval
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with StreamManager(settings) as manager:
        server = StreamServer(manager, host=args.host, port=args.port, authorize=allow_token(token))
        async with server:
            assert server.address is not None
            sys.stdout.write(f"listening {server.address[0]} {server.address[1]}\n")
            sys.stdout.flush()
            await stop.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hedgerow.streams")
    parser.add_argument("--dir", required=True, help="where File streams live")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 = any free port")
    parser.add_argument("--token-env", default="AWS_CONTAINER_AUTHORIZATION_TOKEN")
    parser.add_argument("--max-bytes", type=int, default=1024 * 1024 * 1024)
    parser.add_argument("--fsync-interval", type=float, default=1.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
