"""One family of errors a user can act on. The CLI prints them as `lucidmt: error: ...` and exits non-zero."""


class LucidError(Exception):
    """Base class: anything raised with this type is the user's to fix, not a bug."""


class ConfigurationError(LucidError):
    """A configuration field is unknown, has the wrong type, or an impossible value."""


class DataError(LucidError):
    """Input text is missing, malformed or inconsistent (the message names the file and line)."""


class CheckpointError(LucidError):
    """A checkpoint folder is missing files or does not match its configuration."""
