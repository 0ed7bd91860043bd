"""``DynsecControl`` matching the plugin's answers to its own batches (every replica's
administrator hears every answer on the response topic), no broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from hedgerow.cloud.errors import Unavailable
from hedgerow.cloud.mosquitto_dynsec import DynsecControl


def answer(batch: str, *commands: str) -> bytes:
    responses = [{"command": c, "correlationData": f"{batch}:{i}"} for i, c in enumerate(commands)]
    return json.dumps({"responses": responses}).encode()


async def test_answers_reach_their_own_batch_and_nothing_else_breaks_it() -> None:
    control = DynsecControl("mqtt://127.0.0.1:1", None, client_id="c", username="u", password="p")
    mine: asyncio.Future[list[dict[str, object]]] = asyncio.get_running_loop().create_future()
    control._waiting["b1"] = mine
    control._answer(answer("other-replica", "createClient"))  # another replica's batch
    control._answer(b"not json")
    control._answer(json.dumps({"responses": []}).encode())
    assert not mine.done()
    control._answer(answer("b1", "getClient", "getRole"))
    assert [r["command"] for r in await mine] == ["getClient", "getRole"]


async def test_commands_while_the_broker_is_away_fail_at_once_as_unavailable() -> None:
    control = DynsecControl("mqtt://127.0.0.1:1", None, client_id="c", username="u", password="p")
    with pytest.raises(Unavailable, match="unreachable"):
        async with asyncio.timeout(1):
            await control.execute([{"command": "listClients"}])
    assert control._waiting == {}
