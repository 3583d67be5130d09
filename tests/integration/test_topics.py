"""Topic creation refuses an existing topic whose partition count is not the deployment's."""
from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.topics import TopicPartitionsMismatch, create_missing, partition_counts

pytestmark = pytest.mark.services

BOOTSTRAP = "127.0.0.1:9092"


async def test_a_topic_made_with_another_partition_count_is_refused_by_name(real_services):
    tag = uuid.uuid4().hex[:8]
    right, wrong, new = f"topics-{tag}-right", f"topics-{tag}-wrong", f"topics-{tag}-new"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        # As a broker's auto-create would have made it: its default count, not the deployment's.
        await admin.create_topics([NewTopic(right, 12, 1), NewTopic(wrong, 6, 1)])
        assert await partition_counts(admin, [right, wrong]) == {right: 12, wrong: 6}  # known to the broker now
        with pytest.raises(TopicPartitionsMismatch) as refused:
            await create_missing(admin, [NewTopic(right, 12, 1), NewTopic(wrong, 12, 1), NewTopic(new, 12, 1)])
        assert f"{wrong} (6 partitions, wanted 12)" in str(refused.value)
        assert right not in str(refused.value)
        # The missing one was still made, with the count wanted.
        # (Just created: its metadata may take a moment to spread, which partition_counts waits for.)
        assert await partition_counts(admin, [new]) == {new: 12}
        # Run again with the counts right: nothing to refuse, and nothing changed.
        await create_missing(admin, [NewTopic(right, 12, 1), NewTopic(new, 12, 1)])
        assert await partition_counts(admin, [right, new]) == {right: 12, new: 12}
    finally:
        await admin.delete_topics([right, wrong, new])
        await admin.close()
