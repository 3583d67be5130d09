"""The Kafka clap log of a gateway that started while Kafka was away connects once it answers."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from core.messages import ClapRecorded
from gateway.kafka_adapters import ClapLogUnavailable, KafkaClapLog
from tests.contract.conftest import BOOTSTRAP, create_topic
from tests.support.processes import free_port

pytestmark = pytest.mark.services


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_clap_log_started_while_kafka_is_away_connects_once_it_answers(real_services):
    topic = f"outage-claps-{uuid.uuid4().hex[:8]}"
    await create_topic(topic)
    port = free_port()  # Kafka's bootstrap address, as this gateway knows it: nothing there yet
    clap_log = KafkaClapLog(f"127.0.0.1:{port}", topic, reconnect_max_s=0.5)
    await clap_log.start()
    clap = ClapRecorded("article", "u1", 2, "c1", 0)
    with pytest.raises(ClapLogUnavailable):
        await clap_log.append(clap)

    host, kafka_port = BOOTSTRAP.split(":")
    pipes: set[asyncio.Task[None]] = set()

    async def forward(client_reader, client_writer) -> None:
        kafka_reader, kafka_writer = await asyncio.open_connection(host, int(kafka_port))
        for task in (_pipe(client_reader, kafka_writer), _pipe(kafka_reader, client_writer)):
            pipes.add(asyncio.create_task(task))

    forwarder = await asyncio.start_server(forward, "127.0.0.1", port)  # Kafka comes back
    try:
        offset = None
        for _ in range(150):
            try:
                offset = await clap_log.append(clap)
                break
            except ClapLogUnavailable:
                await asyncio.sleep(0.1)
        assert offset == 0  # the refused append wrote nothing: this is the topic's first event
        assert await clap_log.append(ClapRecorded("article", "u1", 1, "c2", 0)) == 1
    finally:
        await clap_log.close()
        forwarder.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
