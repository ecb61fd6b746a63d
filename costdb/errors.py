"""The one user-facing error type. The CLI catches it once, prints one line and exits 2."""


class CostdbError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line."""

    exit_code = 2
