"""The project's error for bad input, which run.py reports as one line, not a traceback.

A setting out of range, an unknown name, a data file that cannot be read: the user fixes the
input, and a traceback would bury the line that says how. run.py knows such an error by its
type, so a raise site says it is one by raising :class:`InputError` (or a subclass). Any other
error, a ValueError from a library or a bug of ours included, keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, in one line that names the setting or file and how to fix it. A ValueError,
    as every such check raised before it existed, so that callers catching one still do."""
