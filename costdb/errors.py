"""The one user-facing error type. The CLI catches it once, prints one line and exits 2."""


class CostdbError(Exception):
    """A problem the user can fix: the message names the problem and the fix, in one line."""

    exit_code = 2


def did_you_mean(word: str, choices, n: int = 3) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a mistyped name (difflib, as click
    does for options; failing that, up to ``n`` names it is a prefix of), or ``""`` when none is
    close; appended to "unknown ..." messages."""
    import difflib
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    if not close:    # a prefix or a case slip ('Resnet', 'resnet1') is close enough too
        low = str(word).lower()
        close = [c for c in names if low and (c.lower().startswith(low) or low.startswith(c.lower()))][:n]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
