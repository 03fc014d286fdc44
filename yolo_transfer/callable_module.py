"""``yt.compare(...)`` and ``yt.advise(...)`` stay callable though ``compare`` and ``advise`` are subpackages.

Importing ``yolo_transfer.compare`` sets the package attribute ``yolo_transfer.compare`` to that subpackage,
which hides the API function of the same name; such a subpackage gets this module type, and calling it calls
the API function (``yolo_transfer.api``) of its name.
"""

from __future__ import annotations

import types


class ApiSubpackage(types.ModuleType):
    """A subpackage that, called, runs the ``yolo_transfer.api`` function named like it."""

    def __call__(self, *args, **kwargs):
        from yolo_transfer import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)
