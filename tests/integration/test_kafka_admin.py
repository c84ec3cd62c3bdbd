"""Topic clean-up on the real broker: what the benchmark uses to delete the topics of its runs."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka_admin import delete_topics_with_prefix, ensure_topics
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration]


def topic_names(bootstrap: str) -> set[str]:
    async def go() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(go())


def test_deletes_exactly_the_topics_with_the_given_prefixes(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:6]
    doomed = [f"run{run}.a", f"run{run}.b", f"app{run}-state-changelog"]
    kept = [f"run{run}x.other", f"keep{run}.a"]  # a prefix of a prefix is not a match
    asyncio.run(ensure_topics(kafka_bootstrap, doomed + kept, 2, 1, None))
    assert set(doomed + kept) <= topic_names(kafka_bootstrap)

    gone = asyncio.run(delete_topics_with_prefix(kafka_bootstrap, [f"run{run}.", f"app{run}-"]))

    assert sorted(gone) == sorted(doomed)
    wait_until(lambda: not set(doomed) & topic_names(kafka_bootstrap), 30, what="topics deleted")
    assert set(kept) <= topic_names(kafka_bootstrap)
    assert asyncio.run(delete_topics_with_prefix(kafka_bootstrap, [])) == []  # no prefix: nothing, not everything
