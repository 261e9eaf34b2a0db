"""The one exception type the CLI turns into a one-line message and exit status 2."""


class LikexError(Exception):
    """Bad input or an unusable file: the message names the problem for the user."""
