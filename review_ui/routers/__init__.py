"""One router per concern: pages, queue, items, users, metrics."""
