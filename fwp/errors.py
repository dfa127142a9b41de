"""Errors that a user can cause and fix."""


class UserError(ValueError):
    """Bad input or configuration. The message names the problem and how to fix it.

    The command line prints these without a traceback.
    """
