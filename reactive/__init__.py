"""A reactive data layer for Django: cached functions, invalidated on commit, pushed live.

The names below are importable from ``reactive`` itself; they load on first
use, so that importing the package never touches models before apps are ready.
"""

__all__ = [
    "Context",
    "ReactiveFunction",
    "define_reactive_function",
    "invalidate",
    "invalidate_model",
    "mutation",
    "query",
    "registry",
]


def __getattr__(name: str):
    if name in (
        "Context",
        "ReactiveFunction",
        "define_reactive_function",
        "mutation",
        "query",
        "registry",
    ):
        from . import functions

        return getattr(functions, name)
    if name in ("invalidate", "invalidate_model"):
        from . import capture

        return getattr(capture, name)
    raise AttributeError(name)
