"""The clap log port: an append returns the event's offset in its article's partition.

The gateway acks a clap with ``seq = offset + 1``, and a total's ``seq`` is one past the newest
offset it includes, so these must be the log's own offsets.
"""
from core.messages import ClapRecorded


async def test_appends_of_one_article_return_consecutive_offsets_from_zero(clap_log):
    claps = [ClapRecorded("one", "u", 1, f"o{i}", i) for i in range(20)]
    offsets = [await clap_log.log.append(clap) for clap in claps]
    assert offsets == list(range(20))
    assert await clap_log.read_back(len(claps)) == claps
