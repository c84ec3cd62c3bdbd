"""Topic clean-up on the real broker: what the benchmark uses to delete the topics of its runs."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.kafka_admin import delete_topics_with_prefix, ensure_topics
from tests.conftest import wait_until
from tests.kafka_util import topic_counts

pytestmark = [pytest.mark.integration]


def test_deletes_exactly_the_topics_with_the_given_prefixes(kafka_bootstrap: str) -> None:
    base = f"adm{uuid.uuid4().hex[:6]}-"

    def names() -> set[str]:
        return set(topic_counts(kafka_bootstrap, prefix=base)["topics"])

    doomed = [f"{base}run.a", f"{base}run.b", f"{base}app-state-changelog"]
    kept = [f"{base}runx.other", f"{base}keep.a"]  # a prefix of a prefix is not a match
    asyncio.run(ensure_topics(kafka_bootstrap, doomed + kept, 2, 1, None))
    wait_until(lambda: set(doomed + kept) <= names(), 30, what="topics created")

    gone = asyncio.run(delete_topics_with_prefix(kafka_bootstrap, [f"{base}run.", f"{base}app-"]))

    assert sorted(gone) == sorted(doomed)
    wait_until(lambda: not set(doomed) & names(), 30, what="topics deleted")
    assert set(kept) <= names()
    assert asyncio.run(delete_topics_with_prefix(kafka_bootstrap, [])) == []  # no prefix: nothing, not everything
