"""The processor's recovery pieces without Kafka: held writes, readiness, settings."""
from __future__ import annotations

import pytest

from processor.config import ProcessorConfig
from processor.pending_writes import PartitionWrites
from processor.readiness import WorkerState


def test_a_write_is_read_back_before_its_changelog_message_is_acknowledged() -> None:
    writes = PartitionWrites()
    writes.add(b"a:u1", b"1")
    assert writes.newest == {b"a:u1": b"1"}
    assert writes.take_acked() == ({}, None)
    assert writes.newest == {b"a:u1": b"1"}, "an unacknowledged write must stay readable"


def test_only_acknowledged_writes_go_to_disk_with_the_offset_they_reach() -> None:
    writes = PartitionWrites()
    writes.add(b"a:u1", b"1")
    writes.add(b"a:u2", b"2")
    writes.add(b"a:u1", b"3")
    writes.ack(10)  # the first message: a:u1 = 1
    assert writes.take_acked() == ({b"a:u1": b"1"}, 10)
    # a:u1 has a newer write still in flight: reads keep seeing it, not the disk's.
    assert writes.newest == {b"a:u1": b"3", b"a:u2": b"2"}
    writes.ack(11)
    writes.ack(12)
    assert writes.take_acked() == ({b"a:u2": b"2", b"a:u1": b"3"}, 12)
    assert writes.newest == {} and not writes


def test_a_deletion_is_held_like_a_write() -> None:
    writes = PartitionWrites()
    writes.add(b"a:u1", None)
    assert writes.newest == {b"a:u1": None}
    writes.ack(3)
    assert writes.take_acked() == ({b"a:u1": None}, 3)


def test_an_acknowledgement_with_no_write_waiting_moves_no_offset() -> None:
    # A message sent before the partition was revoked: its value was dropped, so recording its
    # offset would tell a restart to skip a record the disk lacks.
    writes = PartitionWrites()
    writes.ack(41)
    assert writes.take_acked() == ({}, None)


@pytest.mark.parametrize(
    ("state", "waiting_for"),
    [
        (WorkerState(joined=False, rebalancing=False, recovering=False, tables_ready=False, partitions=()), "joining the consumer group"),
        (WorkerState(joined=True, rebalancing=True, recovering=False, tables_ready=False, partitions=(0, 3)), "rebalancing"),
        (WorkerState(joined=True, rebalancing=False, recovering=True, tables_ready=False, partitions=(0, 3)), "restoring tables from the changelog"),
        (WorkerState(joined=True, rebalancing=False, recovering=False, tables_ready=False, partitions=(0, 3)), "restoring tables from the changelog"),
        (WorkerState(joined=True, rebalancing=False, recovering=False, tables_ready=True, partitions=(0, 3), catching_up=(3,)), "catching up with the clap log"),
        (WorkerState(joined=True, rebalancing=False, recovering=False, tables_ready=True, partitions=(0, 3)), None),
    ],
)
def test_a_worker_is_ready_only_once_joined_restored_and_caught_up(state: WorkerState, waiting_for: str | None) -> None:
    assert state.waiting_for == waiting_for
    assert state.to_dict() == {
        "ready": waiting_for is None, "waiting_for": waiting_for,
        "partitions": list(state.partitions), "catching_up": list(state.catching_up),
    }


def test_each_worker_on_a_host_has_its_own_state_directory_and_group_identity() -> None:
    one = ProcessorConfig.from_env({"PROCESSOR_STATE_DIR": "/var/lib/clap", "PROCESSOR_WEB_PORT": "6066"})
    two = ProcessorConfig.from_env({"PROCESSOR_STATE_DIR": "/var/lib/clap", "PROCESSOR_WEB_PORT": "6067"})
    rebuild = ProcessorConfig.from_env({"PROCESSOR_STATE_DIR": "/var/lib/clap", "PROCESSOR_WEB_PORT": "6066", "CLAP_EPOCH": "2"})
    assert one.state_path == "/var/lib/clap/clap-processor-e1-6066"
    assert len({one.state_path, two.state_path, rebuild.state_path}) == 3
    assert one.group_instance_id != two.group_instance_id
    assert one.group_instance_id == ProcessorConfig.from_env({"PROCESSOR_WEB_PORT": "6066"}).group_instance_id
    assert ProcessorConfig.from_env({"PROCESSOR_INSTANCE_ID": ""}).group_instance_id is None
    assert ProcessorConfig.from_env({"PROCESSOR_INSTANCE_ID": "processor-0"}).group_instance_id == "processor-0"


def test_an_unknown_store_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ValueError, match="PROCESSOR_STORE"):
        ProcessorConfig.from_env({"PROCESSOR_STORE": "redis"})


def test_the_delivery_dropper_drops_chosen_first_deliveries_of_an_article_once():
    from core.messages import ClapRecorded
    from core.processing import LogEvent
    from processor.fault_injection import DeliveryDropper

    def events(offsets, article="a"):
        return [LogEvent(3, o, ClapRecorded(article, f"u{o}", 1, str(o), 0)) for o in offsets]

    dropper = DeliveryDropper("a:2:2, a:5:1")
    kept = dropper.filter(events(range(4)) + events([9], article="b") + events(range(4, 7)))
    assert [(e.clap.article, e.offset) for e in kept] == [("a", 0), ("a", 1), ("b", 9), ("a", 4), ("a", 6)]
    assert [e.offset for e in dropper.filter(events(range(7)))] == list(range(7))  # read again: all pass
    assert not DeliveryDropper("")


def test_the_buffer_and_kept_records_settings_are_checked_where_they_are_read():
    with pytest.raises(ValueError, match="PROCESSOR_STREAM_BUFFER"):
        ProcessorConfig.from_env({"PROCESSOR_STREAM_BUFFER": "0"})
    with pytest.raises(ValueError, match="PROCESSOR_RECENT_RECORDS"):
        ProcessorConfig.from_env({"PROCESSOR_RECENT_RECORDS": "-1"})
    kept_none = ProcessorConfig.from_env({"PROCESSOR_RECENT_RECORDS": "0", "PROCESSOR_STREAM_BUFFER": "4096"})
    assert (kept_none.recent_records, kept_none.stream_buffer) == (0, 4096)
    assert (ProcessorConfig().stream_buffer, ProcessorConfig().recent_records) == (20_000, 10_000)
