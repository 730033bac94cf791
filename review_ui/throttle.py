"""Failed logins, counted in a moving window per account and address, per account, and per address.

Past any limit, logins are refused without checking the password (so the right one, found
by guessing, does not get in either) until the window has room again. A stranger's few guesses
at a name lock out that name only from the stranger's address (the pair limit); the account's
own limit is higher, so its owner still gets in from elsewhere unless guesses come from many
addresses at once. Counts live in Redis
when LABELER_REDIS_URL is set, so every server process of a deployment counts together;
otherwise in this process. The `limits` library does the counting.
"""

from __future__ import annotations

import os
import time

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from labeler.annotators.ratelimit import REDIS_ENV

PER_ACCOUNT_AND_CLIENT = parse("5/15 minutes")  # failed logins for one name from one address
PER_ACCOUNT = parse("50/15 minutes")  # failed logins for one name, from anywhere: many addresses at once
PER_CLIENT = parse("30/15 minutes")  # failed logins from one address, for any names


class LoginThrottle:
    def __init__(self, redis_url: str | None = None):
        url = redis_url or os.environ.get(REDIS_ENV)
        self.limiter = MovingWindowRateLimiter(storage_from_string(url) if url else MemoryStorage())

    def _keys(self, name: str, client: str):
        return ((PER_ACCOUNT_AND_CLIENT, "login-pair", name.lower(), client), (PER_ACCOUNT, "login-account", name.lower()),
                (PER_CLIENT, "login-client", client))

    def wait(self, name: str, client: str) -> int:
        """Seconds until a login may be tried for this name from this address (0: now)."""
        waits = [max(0, int(self.limiter.get_window_stats(item, *key).reset_time - time.time()) + 1)
                 for item, *key in self._keys(name, client) if not self.limiter.test(item, *key)]
        return max(waits, default=0)

    def failed(self, name: str, client: str) -> None:
        for item, *key in self._keys(name, client):
            self.limiter.hit(item, *key)
