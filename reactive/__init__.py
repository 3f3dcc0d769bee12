"""A reactive data layer for Django: cached functions, invalidated on commit, pushed live.

The public API is re-exported from ``reactive.api_public``-free modules lazily,
so that importing the package does not load Django models before apps are ready.
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
