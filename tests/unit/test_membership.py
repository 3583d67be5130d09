"""A static member's leave on a clean stop, without Kafka: the wire format and when it is sent.

tests/integration/test_recovery.py drives it against the real broker.
"""
from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from aiokafka import errors

from processor.membership import (
    FENCED_INSTANCE_ID,
    FETCH_MAX_WAIT_MS,
    LeaveGroupResponse_v3,
    StaticMemberLeaveRequest,
    heartbeat_from_sync,
    leave_errors,
    leave_when_closed,
    session_refused,
)


def kafka_string(value: str) -> bytes:
    return struct.pack(">h", len(value)) + value.encode()


def test_the_leave_is_a_leave_group_v3_naming_the_member_and_its_instance_id() -> None:
    request = StaticMemberLeaveRequest("clap-processor-e1", "host-6066-8f2c", "host-6066")
    built = request.prepare({13: (0, 5)})  # what Kafka 4.1 answers to ApiVersions for LeaveGroup
    assert (built.API_KEY, built.API_VERSION) == (13, 3)
    # Kafka's LeaveGroupRequest v3: group_id, then an array of (member_id, group_instance_id).
    expected = kafka_string("clap-processor-e1") + struct.pack(">i", 1) + kafka_string("host-6066-8f2c") + kafka_string("host-6066")
    assert built.encode() == expected


def test_a_broker_without_leave_group_v3_is_refused_before_anything_is_sent() -> None:
    # A LeaveGroup below v3 cannot name a static member.
    with pytest.raises(NotImplementedError):
        StaticMemberLeaveRequest("g", "m", "i").prepare({13: (0, 2)})


def test_the_errors_of_a_leave_are_named_for_the_group_and_for_each_member() -> None:
    # Kafka's LeaveGroupResponse v3: throttle, the group's error, then (member_id, instance_id, error).
    response = LeaveGroupResponse_v3.decode(
        struct.pack(">ihi", 0, 0, 1) + kafka_string("m") + kafka_string("i") + struct.pack(">h", FENCED_INSTANCE_ID)
    )
    assert leave_errors(response) == ["FENCED_INSTANCE_ID"]
    unknown_member = errors.UnknownMemberIdError.errno
    assert leave_errors(LeaveGroupResponse_v3(0, unknown_member, [])) == ["UnknownMemberIdError"]
    assert leave_errors(LeaveGroupResponse_v3(0, 0, [("m", "i", 0)])) == []


class FakeClient:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.sent: list[tuple[int, Any]] = []
        self.fail = fail

    async def send(self, node: int, request: Any, **kwargs: Any) -> LeaveGroupResponse_v3:
        self.sent.append((node, request))
        if self.fail:
            raise self.fail
        return LeaveGroupResponse_v3(0, 0, [(request.member_id, request.instance_id, 0)])


class FakeCoordinator:
    """aiokafka's group coordinator as far as the leave uses it: close() forgets the member."""

    def __init__(self, client: FakeClient, generation: int = 4) -> None:
        self._client = client
        self.group_id, self.member_id, self.generation, self.coordinator_id = "g", "inst-uuid", generation, 1
        self.events: list[str] = []

    async def close(self) -> None:
        self.events.append(f"closed, {len(self._client.sent)} sent")
        self.member_id, self.generation = "", -1


def test_the_leave_goes_to_the_coordinator_after_the_consumer_closed_with_the_member_it_had() -> None:
    coordinator = FakeCoordinator(FakeClient())
    leave_when_closed(coordinator, "inst", timeout_s=1)
    leave_when_closed(coordinator, "inst", timeout_s=1)  # installed twice (a second assignment): one leave
    asyncio.run(coordinator.close())
    assert coordinator.events == ["closed, 0 sent"]
    [(node, request)] = coordinator._client.sent
    assert (node, request.group_id, request.member_id, request.instance_id) == (1, "g", "inst-uuid", "inst")


def test_a_member_that_never_joined_sends_no_leave() -> None:
    coordinator = FakeCoordinator(FakeClient(), generation=-1)
    leave_when_closed(coordinator, "inst", timeout_s=1)
    asyncio.run(coordinator.close())
    assert coordinator.events == ["closed, 0 sent"] and coordinator._client.sent == []


def test_a_failed_leave_does_not_fail_the_stop() -> None:
    coordinator = FakeCoordinator(FakeClient(fail=errors.KafkaConnectionError("gone")))
    leave_when_closed(coordinator, "inst", timeout_s=1)
    asyncio.run(coordinator.close())
    assert len(coordinator._client.sent) == 1


class FakeJoiningCoordinator:
    """aiokafka's coordinator as far as a join goes: the assignment callback, then heartbeats."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _start_heartbeat_task(self) -> None:
        self.events.append("heartbeats start")

    async def _on_join_complete(self, generation: int, member_id: str, protocol: str, assignment: bytes) -> None:
        self.events.append(f"assignment callback, generation {generation}")


def test_heartbeats_start_when_the_group_is_synced_not_after_the_assignment_callback() -> None:
    coordinator = FakeJoiningCoordinator()
    heartbeat_from_sync(coordinator)
    asyncio.run(coordinator._on_join_complete(7, "m", "faust", b""))
    assert coordinator.events == ["heartbeats start", "assignment callback, generation 7"]


async def test_the_workers_consumer_is_tuned_before_it_starts() -> None:
    from processor.app import app, config

    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what Faust starts in its thread
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
        assert consumer.start.__name__ == "start_then_tune"
        assert (consumer._session_timeout_ms, consumer._heartbeat_interval_ms) == (
            config.session_timeout_s * 1000, config.heartbeat_interval_s * 1000)
    finally:
        await consumer.stop()


def test_a_session_below_the_brokers_floor_is_refused_with_the_fix_in_the_message() -> None:
    assert session_refused(3.0, 2000) is None
    assert session_refused(3.0, 3000) is None
    refused = session_refused(3.0, 6000)
    assert refused is not None
    assert "group.min.session.timeout.ms is 6000 ms" in refused and "PROCESSOR_SESSION_TIMEOUT_S to 6 or more" in refused
