"""Errors that a user can cause and fix."""


class UserError(ValueError):
    """Bad input or configuration. The message names the problem and how to fix it.

    The command line prints these without a traceback.
    """


def brief(error: BaseException, limit: int = 120) -> str:
    """``Type: first sentence`` of an exception's message, for a one-line error (library
    messages can run to a paragraph)."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = text.split(". ")[0].rstrip(".")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
