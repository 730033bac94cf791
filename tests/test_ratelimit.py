"""Rate limits and Retry-After pauses: per process, and shared between workers through Redis."""

import asyncio
import threading
import time
import uuid

import pytest

from labeler.annotators.ratelimit import REDIS_ENV, LocalLimit, SharedLimit
from tests.llm_server import LLMServer
from tests.test_annotators import llm, project, run, votes

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url():
    import redis

    try:
        redis.from_url(REDIS).ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS}")
    return REDIS


def test_the_rpm_limit_and_pauses_are_shared_by_every_process(redis_url):
    key = uuid.uuid4().hex
    first, second = SharedLimit(redis_url, key, rpm=5), SharedLimit(redis_url, key, rpm=5)  # two workers

    async def five_then_a_sixth():
        for limit in (first, first, first, second, second):
            await asyncio.wait_for(limit.wait(), 1)
        with pytest.raises(asyncio.TimeoutError):  # the sixth start this minute waits, whoever asks
            await asyncio.wait_for(second.wait(), 0.5)
        await asyncio.wait_for(SharedLimit(redis_url, key + "-other", rpm=5).wait(), 1)  # other models are apart

    asyncio.run(five_then_a_sixth())
    told, other = SharedLimit(redis_url, key + "-p", None), SharedLimit(redis_url, key + "-p", None)

    async def pause_seen_by_the_other():
        await told.pause(0.6)
        started = time.monotonic()
        await other.wait()
        return time.monotonic() - started

    assert asyncio.run(pause_seen_by_the_other()) >= 0.5


def test_a_local_limit_spaces_calls_and_pauses_all_of_them():
    async def timed():
        limit = LocalLimit(rpm=600)  # one start every 0.1 s
        started = time.monotonic()
        await asyncio.gather(*(limit.wait() for _ in range(5)))
        spaced = time.monotonic() - started
        await limit.pause(0.3)
        started = time.monotonic()
        await limit.wait()
        return spaced, time.monotonic() - started

    spaced, paused = asyncio.run(timed())
    assert 0.35 <= spaced < 1.0 and paused >= 0.28


def test_a_429_told_to_one_worker_holds_back_the_others(tmp_path, monkeypatch, redis_url):
    """Two workers on one model: once the first is told Retry-After, the second does not call before it passes."""
    monkeypatch.setenv(REDIS_ENV, redis_url)
    with LLMServer() as server:
        settings = {"max_retries": 6, "max_concurrency": 8}
        # Two projects in two stores, so neither worker's votes or cache can stand in for the other's calls.
        first, second = (project(tmp_path / name, server, llm("stormy", "storm", **settings), n_items=30,
                                 url=f"sqlite:///{tmp_path / name}.db") for name in ("a", "b"))
        worker = threading.Thread(target=run, args=(first,))
        worker.start()
        while not server.storm["started"]:
            time.sleep(0.01)
        time.sleep(0.2)  # the first worker has had its 429s
        second_started = time.monotonic()
        run(second)
        worker.join(60)
        storm = server.storm
    assert len(votes(first, "stormy")) == 30 and len(votes(second, "stormy")) == 30  # nothing lost
    assert second_started < storm["calm_at"]  # the second worker did start during the storm...
    assert [t for t in storm["arrivals"] if second_started < t < storm["calm_at"]] == []  # ...and waited it out
