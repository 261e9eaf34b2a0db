"""The one exception type the CLI turns into a one-line message and exit status 2."""


class LikexError(Exception):
    """Bad input or an unusable file: the message names the problem for the user."""


class ConfigError(LikexError):
    """A config field holds a bad value. The library names the field; the CLI, which alone
    knows the flags, names the flag instead (see likex.cli)."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field} {message}")
