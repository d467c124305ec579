"""User-facing errors.

Raise :class:`PlayworldError` for anything a user did or gave us that cannot work (bad path,
bad config, corrupt file, wrong model folder). The message must say what was wrong *and* what
to do. The CLI prints it as one line (no traceback) and exits with code 1.
"""


class PlayworldError(Exception):
    """An error caused by user input, with a message that says what to do."""
