"""Errors that a user can cause and fix."""


class UserError(ValueError):
    """Bad input or configuration. The message names the problem and how to fix it.

    The command line prints these without a traceback.
    """


class RunStopped(Exception):  # noqa: N818 - a stop asked for, not an error
    """A run stopped by SIGINT / SIGTERM after saving its checkpoint (for callers that must not
    go on as if it had finished, e.g. a sweep); ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, message: str, signum: int | None) -> None:
        super().__init__(message)
        self.exit_code = 128 + (signum or 2)


def brief(error: BaseException, limit: int = 120) -> str:
    """``Type: first sentence`` of an exception's message, for a one-line error (library
    messages can run to a paragraph)."""
    text = (str(error).strip().splitlines() or [""])[0]
    text = text.split(". ")[0].rstrip(".")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
