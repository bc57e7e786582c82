"""One family of errors a user can act on. The CLI prints them as `lucidmt: error: ...` and exits non-zero."""


class LucidError(Exception):
    """Base class of errors with a message worth showing as it is. `users_to_fix` (true unless a subclass says
    otherwise) separates the user's mistakes (a server answers 422) from failures of the machinery (500, logged)."""

    users_to_fix = True


class ConfigurationError(LucidError):
    """A configuration field is unknown, has the wrong type, or an impossible value."""


class DataError(LucidError):
    """Input text is missing, malformed or inconsistent (the message names the file and line)."""


class CheckpointError(LucidError):
    """A checkpoint folder is missing files or does not match its configuration."""
