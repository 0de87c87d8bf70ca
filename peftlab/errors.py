"""The one exception type whose message is meant for a person: the problem and the fix."""


class PeftlabError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits non-zero."""
