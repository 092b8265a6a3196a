"""Hooks tests/openapi.rs loads into schemathesis (SCHEMATHESIS_HOOKS).

schemathesis percent-decodes a path parameter before it encodes it for the
URL ("to keep quoting idempotent"), and it does so to generated values and
to values a stateful step takes from an earlier answer alike. An id that
holds a literal `%` followed by two hex digits, such as `%08` (valid: the
id rule forbids control characters, not `%`), therefore goes out as `%08`
and reaches the daemon as the control character 0x08, which the daemon
rightly refuses, and the fuzzer then reports a valid request refused.

A valid (positive) case cannot hold a control character, so where its
path parameter decodes to one, the `%` was literal: it is sent as `%25`,
and the daemon receives a `%` again. Invalid (negative) cases are left as
generated.
"""

import re
from urllib.parse import unquote, urlsplit

import schemathesis

# What the id rule (`Id` in docs/openapi.yaml) forbids: C0, DEL, C1.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Where a webhook the fuzzer creates posts its events: a loopback port
# nothing listens on, so the test sends nothing off the machine (a generated
# URL may name any host) and each post fails at once.
LOOPBACK_RECEIVER = "http://127.0.0.1:9/fuzzed-webhook"


@schemathesis.hook
def before_call(context, case, **kwargs):
    keep_webhooks_on_loopback(case)
    meta = case.meta
    if meta is None or meta.generation.mode.value != "positive":
        return
    if not case.path_parameters:
        return
    for name, value in case.path_parameters.items():
        if isinstance(value, str) and CONTROL.search(unquote(value)):
            case.path_parameters[name] = value.replace("%", "%25")


def keep_webhooks_on_loopback(case):
    """A webhook URL the daemon would take (http or https, a host, at most
    2,048 bytes) is replaced by the loopback receiver, which it also takes;
    one it would refuse is left as it is, to be refused."""
    if case.method.upper() != "PUT" or not case.path.startswith("/v1/webhooks/"):
        return
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        return
    url = body["url"]
    try:
        parts = urlsplit(url)
        taken = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        taken = False
    if taken and len(url.encode()) <= 2048:
        body["url"] = LOOPBACK_RECEIVER
