"""The one base class of newscat's errors: bad input or a request that cannot be carried out.

The CLI catches it once and prints its message (no traceback); each stage raises its own subclass.
"""


class NewscatError(ValueError):
    """A problem the user can fix; the message says what is wrong and what to do."""
