"""One exception family so the CLI can turn bad input into a clear message, not a traceback."""


class MemetrmError(Exception):
    """Base class for user-facing errors."""


class DataError(MemetrmError):
    """Bad or missing input data. The message names the file, line or id."""


class ConfigError(MemetrmError):
    """An unknown component name or an invalid setting."""
