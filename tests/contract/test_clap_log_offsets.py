"""The clap log port: an append returns the event's offset in its article's partition.

The gateway acks a clap with ``seq = offset + 1``, and a total's ``seq`` is one past the newest
offset it includes, so these must be the log's own offsets.
"""
import asyncio

from core.messages import ClapRecorded


async def test_appends_of_one_article_return_consecutive_offsets_from_zero(clap_log):
    claps = [ClapRecorded("one", "u", 1, f"o{i}", i) for i in range(20)]
    offsets = [await clap_log.log.append(clap) for clap in claps]
    assert offsets == list(range(20))
    assert await clap_log.read_back(len(claps)) == claps


async def test_concurrent_appends_each_return_the_offset_their_event_has_in_the_log(clap_log):
    """Appends made together share record batches (the Kafka adapter) or one write (the
    embedded one): each must still get its own event's offset, or an ack's seq would name
    another clap."""
    claps = [ClapRecorded("together", f"u{i % 7}", 1 + i % 5, f"t{i}", i) for i in range(300)]
    offsets = await asyncio.gather(*(clap_log.log.append(clap) for clap in claps))
    assert sorted(offsets) == list(range(300))
    in_log_order = [clap for _, clap in sorted(zip(offsets, claps), key=lambda pair: pair[0])]
    assert await clap_log.read_back(len(claps)) == in_log_order
