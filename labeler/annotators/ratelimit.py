"""How fast a model may be called: a limit for this process, or one shared by every worker through Redis.

Both honour a server's Retry-After for every caller of that model, not only the call that was
told: litellm's own retries come back too soon (litellm #20722), and a 429 to one call means the
others are about to get one too. Set LABELER_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to share
limits and pauses between `labeler worker` processes; the moving-window counting is the
`limits` library's.
"""

from __future__ import annotations

import asyncio
import os
import time

REDIS_ENV = "LABELER_REDIS_URL"


def rate_limit(key: str, rpm: int | None):
    """The limit for one model endpoint (`key`), shared through Redis when LABELER_REDIS_URL is set."""
    url = os.environ.get(REDIS_ENV)
    return SharedLimit(url, key, rpm) if url else LocalLimit(rpm)


class LocalLimit:
    """At most `rpm` call starts per minute in this process, evenly spaced; pauses shared by its calls."""

    def __init__(self, rpm: int | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_at = 0.0
        self.paused_until = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        while (pause := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)

    async def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class SharedLimit:
    """At most `rpm` call starts per minute across every process using this Redis; pauses shared too."""

    def __init__(self, url: str, key: str, rpm: int | None):
        self.url, self.key, self.rpm = url, key, rpm
        self._loop = None  # Redis clients belong to one event loop; a new run may bring a new loop

    def _clients(self):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            import redis.asyncio as redis
            from limits import RateLimitItemPerMinute
            from limits.aio.storage import RedisStorage
            from limits.aio.strategies import MovingWindowRateLimiter

            self._redis = redis.from_url(self.url)
            storage = RedisStorage(f"async+{self.url}", implementation="redispy")
            self._limiter = MovingWindowRateLimiter(storage) if self.rpm else None
            self._item = RateLimitItemPerMinute(self.rpm) if self.rpm else None
            self._loop = loop
        return self._redis, self._limiter

    @property
    def pause_key(self) -> str:
        return f"labeler:pause:{self.key}"

    async def wait(self) -> None:
        redis, limiter = self._clients()
        while True:
            pause_ms = await redis.pttl(self.pause_key)
            if pause_ms > 0:
                await asyncio.sleep(pause_ms / 1000)
                continue
            if limiter is None or await limiter.hit(self._item, "labeler", self.key):
                return
            window = await limiter.get_window_stats(self._item, "labeler", self.key)
            await asyncio.sleep(max(0.01, window.reset_time - time.time()))

    async def pause(self, seconds: float) -> None:
        redis, _ = self._clients()
        milliseconds = int(seconds * 1000)
        if milliseconds > 0 and await redis.pttl(self.pause_key) < milliseconds:
            await redis.set(self.pause_key, 1, px=milliseconds)
