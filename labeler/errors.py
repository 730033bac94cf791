"""Errors the CLI reports as messages, not tracebacks."""


class LabelerError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable store."""
