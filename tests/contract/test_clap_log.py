"""The clap log port: what is appended and acknowledged can be read back, in order per article."""
import asyncio

from core.messages import ClapRecorded


async def test_appended_claps_read_back_in_order_per_article(clap_log):
    claps = [ClapRecorded(f"art{i % 3}", f"u{i}", i % 50 + 1, f"id{i}", 1000 + i) for i in range(60)]
    await asyncio.gather(*(clap_log.log.append(c) for c in claps))
    read = await clap_log.read_back(len(claps))
    assert sorted(read, key=lambda c: c.clap_id) == sorted(claps, key=lambda c: c.clap_id)
    for article in ("art0", "art1", "art2"):
        ids = [c.clap_id for c in read if c.article == article]
        assert ids == sorted(ids, key=lambda cid: int(cid[2:]))


async def test_sequential_appends_keep_their_order(clap_log):
    claps = [ClapRecorded("one", "u", 1, f"s{i}", i) for i in range(20)]
    for clap in claps:
        await clap_log.log.append(clap)
    assert await clap_log.read_back(len(claps)) == claps


async def test_append_returns_increasing_offsets_that_a_reader_yields_embedded(tmp_path):
    # Embedded only until gateway/kafka_adapters.py returns offsets too; then this belongs in the
    # suite above, over both adapters.
    from embedded.file_log import FileClapLog

    log = FileClapLog(tmp_path / "claps.log")
    try:
        claps = [ClapRecorded(f"art{i % 3}", f"u{i}", 1, f"id{i}", 1000 + i) for i in range(40)]
        concurrent = await asyncio.gather(*(log.append(c) for c in claps[:30]))
        sequential = [await log.append(c) for c in claps[30:]]
        offsets = concurrent + sequential
        assert offsets == list(range(40))  # one partition: each append gets the next line
        assert [(offset, event) async for offset, event in log.read(0)] == list(zip(offsets, claps))
    finally:
        await log.close()
