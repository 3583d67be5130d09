"""How a worker keeps its place in its consumer group, and hands its partitions over quickly.

A worker that dies is noticed when its session times out (``PROCESSOR_SESSION_TIMEOUT_S``): the
shorter the session, the sooner a survivor counts its partitions. Three things about Faust's
aiokafka consumer decide whether a short session is safe and a takeover quick; ``tune_worker_consumers``
changes them on the consumer Faust creates, before it starts:

**Heartbeats during the assignment.** aiokafka stops heartbeating when a rebalance begins and
starts again only once the partition-assignment callback has returned. Faust's callback opens the
RocksDB store of every newly assigned partition; on this loaded 2-core machine that took 4 s, and
the worker's 3 s session expired inside it (seen in a ``loadtest.recovery`` run: the worker was
expelled and the group rebalanced twice more). Kafka's Java consumer heartbeats from a thread of
its own through its callbacks; here the heartbeats start again as soon as the group is synced,
before the callback, so a session need only outlast a heartbeat interval plus a stall of the
consumer's thread, not the store's opening.

**The fetch wait.** Faust asks Kafka to hold an empty fetch for 1.5 s. A broker answers one request
of a connection at a time, so a worker's other requests to the broker (the end offsets a takeover's
recovery and catch-up ask for) wait behind an idle fetch: up to 1.5 s added to each takeover.
Bounded here at ``FETCH_MAX_WAIT_MS``; a fetch that finds records returns at once whatever the
bound, so only idle fetches come more often.

**The leave.** With a group instance id (static membership, ``PROCESSOR_INSTANCE_ID``) aiokafka,
like Kafka's Java consumer, sends no LeaveGroup when it closes: the coordinator keeps the member's
partitions for it until its session times out, so that a worker back within that time gets them
again without a rebalance. A worker that is not coming back (a scale-down, ``make down``) would
leave its partitions uncounted for the whole session timeout. Kafka's LeaveGroup v3 (KIP-345)
removes a static member by its instance id (Kafka's admin client sends it for
``removeMembersFromConsumerGroup``). A worker sends it on a clean stop, as the last thing its
consumer does: after Faust has waited for the last batch to be applied, its writes acknowledged
and its offsets committed, so the next owner of the partitions never runs beside a worker still
writing their state. A worker killed with SIGKILL sends nothing, so a crashed worker restarted
within the session timeout still takes its partitions straight back.

**The brokers' floor.** Kafka refuses a session below its ``group.min.session.timeout.ms``; aiokafka
then logs one error and the worker never joins. ``session_refused`` lets the worker say so and exit
before Faust starts (processor/__main__.py).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import errors
from aiokafka.client import ConnectionGroup
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

log = logging.getLogger("processor")

LEAVE_GROUP_API_KEY = 13
# The broker setting below which Kafka refuses a member's session timeout (6,000 ms by default).
SESSION_FLOOR = "group.min.session.timeout.ms"


async def broker_session_floor_ms(bootstrap: str) -> int:
    """The highest ``group.min.session.timeout.ms`` of the cluster's brokers: any of them may
    coordinate the group."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        brokers = [str(b["node_id"]) for b in (await admin.describe_cluster())["brokers"]]
        wanted = [ConfigResource(ConfigResourceType.BROKER, broker, {SESSION_FLOOR: None}) for broker in brokers]
        responses = await admin.describe_configs(wanted)
    finally:
        await admin.close()
    values = [int(value) for response in responses for *_, entries in response.resources
              for name, value, *_ in entries if name == SESSION_FLOOR]
    return max(values)


def session_refused(session_timeout_s: float, floor_ms: int) -> str | None:
    """Why the brokers would refuse the worker's session timeout, or None if they take it.

    Refused, aiokafka logs one InvalidSessionTimeoutError and the worker never joins its group;
    saying so before Faust starts turns that into an exit with the fix in the message."""
    if session_timeout_s * 1000 >= floor_ms:
        return None
    return (f"the brokers' {SESSION_FLOOR} is {floor_ms} ms, above PROCESSOR_SESSION_TIMEOUT_S={session_timeout_s:g} s: "
            f"Kafka would refuse the worker's session. Start the brokers with the config in deploy/ "
            f"({SESSION_FLOOR}=2000), or set PROCESSOR_SESSION_TIMEOUT_S to {floor_ms / 1000:g} or more.")


# The longest a fetch waits for records. Idle, a worker sends 5 fetches a second instead of 0.7.
FETCH_MAX_WAIT_MS = 200


def tune_worker_consumers(instance_id: str | None, leave_timeout_s: float, fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make every Faust worker consumer created from now on heartbeat through its assignment
    callback, wait at most ``fetch_max_wait_ms`` per fetch and, as a static member
    (``instance_id``), leave its group when it closes. Call it before Faust starts its consumer.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread._create_worker_consumer, "untuned", AIOKafkaConsumerThread._create_worker_consumer)

    def create_worker_consumer(thread: Any, transport: Any) -> Any:
        consumer = create(thread, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # Faust passes 1500 and offers no setting
        start = consumer.start

        async def start_then_tune() -> None:
            await start()  # creates the group coordinator; the first join waits for Faust's subscribe
            heartbeat_from_sync(consumer._coordinator)
            if instance_id:
                leave_when_closed(consumer._coordinator, instance_id, leave_timeout_s)

        consumer.start = start_then_tune
        return consumer

    create_worker_consumer.untuned = create  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def heartbeat_from_sync(coordinator: Any) -> None:
    """Start an aiokafka group coordinator's heartbeats once the group is synced, not after the
    assignment callback (which aiokafka awaits in ``_on_join_complete``, before it starts them).

    A rebalance that begins meanwhile is answered REBALANCE_IN_PROGRESS and makes the member
    rejoin after the callback, as any heartbeat would.
    """
    on_join_complete = coordinator._on_join_complete

    async def heartbeating_on_join_complete(*args: Any, **kwargs: Any) -> Any:
        coordinator._start_heartbeat_task()  # aiokafka's own call after the callback is then a no-op
        return await on_join_complete(*args, **kwargs)

    coordinator._on_join_complete = heartbeating_on_join_complete


class LeaveGroupResponse_v3(Response):
    API_KEY = LEAVE_GROUP_API_KEY
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16))),
    )


class LeaveGroupRequest_v3(RequestStruct):
    """LeaveGroup v3: the first version that names members, each by member id and instance id."""

    API_KEY = LEAVE_GROUP_API_KEY
    API_VERSION = 3
    RESPONSE_TYPE = LeaveGroupResponse_v3
    SCHEMA = Schema(
        ("group_id", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class StaticMemberLeaveRequest(Request[LeaveGroupRequest_v3]):
    """Removes one static member. Its member id is sent too: the coordinator then refuses
    (FENCED_INSTANCE_ID) to remove a newer incarnation that already took the instance id over."""

    API_KEY = LEAVE_GROUP_API_KEY

    def __init__(self, group_id: str, member_id: str, instance_id: str) -> None:
        self.group_id, self.member_id, self.instance_id = group_id, member_id, instance_id

    def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
        return request_struct_class(self.group_id, [(self.member_id, self.instance_id)])


# Kafka's name for the one error of a static member's leave that aiokafka has no class for: the
# instance id belongs to a newer member now (a restarted worker already rejoined).
FENCED_INSTANCE_ID = 82


def leave_errors(response: LeaveGroupResponse_v3) -> list[str]:
    """The names of the errors in a LeaveGroup response, for the group and for each member."""
    codes = [response.error_code] + [code for _, _, code in response.members]
    return [_error_name(code) for code in codes if code != 0]


def _error_name(code: int) -> str:
    if code == FENCED_INSTANCE_ID:
        return "FENCED_INSTANCE_ID"
    if code in errors.kafka_errors:
        return errors.kafka_errors[code].__name__
    return f"error code {code}"


def leave_when_closed(coordinator: Any, instance_id: str, timeout_s: float) -> None:
    """Make an aiokafka group coordinator send a static member's LeaveGroup when it closes.

    The coordinator closes as the consumer stops, after its last commit; a SIGKILL never gets
    here. A failed leave costs only what it did before: the session timeout.
    """
    if getattr(coordinator, "_leaves_when_closed", False):
        return
    close = coordinator.close

    async def close_then_leave() -> None:
        member_id, generation = coordinator.member_id, coordinator.generation
        node = coordinator.coordinator_id
        await close()
        if generation <= 0 or node is None:
            return  # never joined, or lost the coordinator: nothing to leave
        request = StaticMemberLeaveRequest(coordinator.group_id, member_id, instance_id)
        try:
            response = await asyncio.wait_for(
                coordinator._client.send(node, request, group=ConnectionGroup.COORDINATION), timeout_s
            )
        except (errors.KafkaError, NotImplementedError, OSError, asyncio.TimeoutError) as error:
            log.warning("could not leave the consumer group (%r); its partitions move after the session timeout", error)
            return
        refused = leave_errors(response)
        if refused:
            log.warning("the group coordinator refused the leave (%s); its partitions move after the session timeout",
                        ", ".join(refused))
        else:
            log.info("left consumer group %s as static member %s: its partitions move now", coordinator.group_id, instance_id)

    coordinator.close = close_then_leave
    coordinator._leaves_when_closed = True
