"""Learned response headers (reactive.replay): replayed only once Django agreed with itself."""

from __future__ import annotations

from reactive.replay import Templates

BASE = [(b"Content-Type", b"application/json"), (b"ETag", b'"a"'), (b"Content-Length", b"10")]
SLOTS = (b"99", b'"new"')


def test_two_agreeing_answers_make_a_template_with_the_slots_filled():
    templates = Templates()
    templates.learn("r", "bearer", 200, BASE, {})
    assert templates.headers("r", "bearer", 200, {}, SLOTS) is None
    templates.learn(
        "r", "bearer", 200, [*BASE[:1], (b"ETag", b'"b"'), (b"Content-Length", b"3")], {}
    )
    assert templates.headers("r", "bearer", 200, {}, SLOTS) == [
        (b"Content-Type", b"application/json"),
        (b"ETag", b'"new"'),
        (b"Content-Length", b"99"),
    ]
    assert templates.headers("r", "session", 200, {}, SLOTS) is None  # another identity kind
    assert templates.headers("r", "bearer", 304, {}, SLOTS) is None


def test_a_header_that_differs_per_request_is_never_replayed():
    templates = Templates()
    for n in range(5):
        templates.learn("r", "bearer", 200, [*BASE, (b"X-Request-Id", str(n).encode())], {})
    assert templates.headers("r", "bearer", 200, {}, SLOTS) is None


def test_an_answer_setting_a_cookie_is_never_learned():
    templates = Templates()
    for _ in range(3):
        templates.learn("r", "session", 200, [*BASE, (b"Set-Cookie", b"csrftoken=x")], {})
    assert templates.headers("r", "session", 200, {}, SLOTS) is None


def test_a_changed_answer_replaces_the_template_only_once_it_agrees_again():
    templates = Templates()
    templates.learn("r", "bearer", 200, BASE, {})
    templates.learn("r", "bearer", 200, BASE, {})
    changed = [*BASE, (b"X-Frame-Options", b"DENY")]
    templates.learn("r", "bearer", 200, changed, {})
    assert templates.headers("r", "bearer", 200, {}, SLOTS) is None  # no replay of the old one
    templates.learn("r", "bearer", 200, changed, {})
    assert (b"X-Frame-Options", b"DENY") in templates.headers("r", "bearer", 200, {}, SLOTS)


def test_templates_are_kept_per_value_of_the_headers_the_response_varies_on():
    templates = Templates()
    vary = [*BASE, (b"Vary", b"Accept-Language, Cookie"), (b"Content-Language", b"fr")]
    templates.learn("r", "session", 200, vary, {"accept-language": "fr"})
    templates.learn("r", "session", 200, vary, {"accept-language": "fr"})
    assert templates.headers("r", "session", 200, {"accept-language": "fr"}, SLOTS) is not None
    assert templates.headers("r", "session", 200, {"accept-language": "de"}, SLOTS) is None


def test_a_setting_that_shapes_responses_forgets_every_template(settings):
    from reactive.replay import templates

    templates.learn("r", "bearer", 200, BASE, {})
    templates.learn("r", "bearer", 200, BASE, {})
    settings.SECURE_REFERRER_POLICY = "no-referrer"
    assert templates.headers("r", "bearer", 200, {}, SLOTS) is None
