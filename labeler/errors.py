"""Errors the CLI reports as messages, not tracebacks."""


class LabelerError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable store."""


class Forbidden(LabelerError):
    """Allowed to the role in general, but not on this target (another project's user, say): HTTP 403."""
