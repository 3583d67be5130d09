"""python -m projector: run the projector against Kafka and Cassandra."""
from __future__ import annotations

import asyncio
import signal

from observability.logs import setup_logging
from projector import metrics
from projector.cassandra_store import CassandraCounterStore
from projector.config import ProjectorConfig
from projector.service import Projector


async def main(config: ProjectorConfig) -> None:
    metrics.serve(config.metrics_host, config.metrics_port)
    store = CassandraCounterStore(
        config.cassandra_hosts, config.cassandra_port, config.cassandra_keyspace,
        replication_factor=config.replication_factor, user_rows_per_batch=config.user_rows_per_batch,
    )
    await store.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Projector(config, store).run(stop=stop)
    finally:
        await store.close()


if __name__ == "__main__":
    config = ProjectorConfig.from_env()
    setup_logging("projector", config.log_format)
    asyncio.run(main(config))
