"""The event log's interface (reactive/log.py) and the backend chosen by dotted path."""

from __future__ import annotations

from typing import Any

import pytest

from reactive.events import Event
from reactive.log import EventLog, Receiver, get_log, parse_position


class RecordingLog(EventLog):
    """A backend of a project's own: it remembers the options it was built with."""

    def __init__(self, *, maxlen: int, prefix: str, **options: Any):
        super().__init__(maxlen=maxlen, prefix=prefix)
        self.options = options

    def append(self, tenant: str, tags: list[str], at: int) -> Event:
        return Event("1", tenant, tags, at)

    def position(self) -> str:
        return "1"

    def last_id(self, tenant: str) -> str:
        return "0"

    def read(self, tenants: list[str], since: int, limit: int = 1000) -> list[Event]:
        return []

    def announce(self, event: Event) -> None:
        pass

    async def listen(self, receiver: Receiver) -> None:
        pass

    async def stop(self, receiver: Receiver) -> None:
        pass


@pytest.fixture
def recording(settings):
    settings.REACTIVE = {
        **settings.REACTIVE,
        "LOG_BACKEND": f"{__name__}.RecordingLog",
        "LOG_OPTIONS": {"url": "fake://x", "flag": True},
        "LOG_MAXLEN": 7,
        "KEY_PREFIX": "proj:rx",
    }


@pytest.mark.parametrize(
    "given, expected", [(None, None), ("", None), ("0", 0), (" 12 ", 12), (34, 34)]
)
def test_positions_parse_as_integers_or_none(given, expected):
    assert parse_position(given) == expected


@pytest.mark.parametrize("given", ["-1", -5, "abc", "1.5", "1e3"])
def test_a_malformed_or_negative_position_is_a_value_error(given):
    with pytest.raises(ValueError):
        parse_position(given)


def test_the_backend_is_the_dotted_path_built_with_its_options(recording):
    log = get_log()
    assert type(log) is RecordingLog
    assert (log.maxlen, log.prefix) == (7, "proj:rx")
    assert log.options == {"url": "fake://x", "flag": True}
    assert get_log() is log  # one per process


def test_changing_the_options_builds_a_new_log(recording, settings):
    before = get_log()
    settings.REACTIVE = {**settings.REACTIVE, "LOG_OPTIONS": {"url": "fake://y"}}
    after = get_log()
    assert after is not before and after.options == {"url": "fake://y"}


def test_a_backend_that_does_not_import_fails_loudly(settings):
    settings.REACTIVE = {**settings.REACTIVE, "LOG_BACKEND": "reactive.backends.nowhere.Log"}
    with pytest.raises(ImportError):
        get_log()


def test_a_backend_must_implement_the_whole_interface():
    class Partial(EventLog):
        def append(self, tenant: str, tags: list[str], at: int) -> Event:
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Partial(maxlen=1, prefix="rx")  # type: ignore[abstract]


def test_a_backend_is_shared_unless_it_says_otherwise(recording):
    assert get_log().SHARED is True
