"""URLs as they may be shown: without credentials (``user:password@``) or a query string.

A remote vLLM URL (``--remote-url``) may carry credentials or a token in its query; the engine's
messages name the URL, and /health's 503 and error bodies repeat the engine's messages. The
server passes every error message through :func:`redact_urls`, and ``winnow serve`` installs
:func:`redact_log_records` on its log handlers, so neither a client nor the log sees them.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "redact_log_records", "redact_url", "redact_urls"]

HIDDEN = "***"
# a run of scheme characters, ://, then everything up to whitespace or a quote / bracket that
# ends a repr. Linear in the text's length: a match starts only where such a run starts (the
# lookbehind) and possessive runs never give characters back, so no character is scanned from
# two starts. The scheme proper begins at the run's first letter (:func:`_redact_match`).
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z0-9+.\-]++://[^\s'\"<>`\\]++")
_FIRST_LETTER = re.compile(r"[A-Za-z]")


def _redact_match(match: re.Match[str]) -> str:
    found = match.group(0)
    letter = _FIRST_LETTER.search(found, 0, found.index("://"))
    if letter is None:
        return found  # no scheme: digits and dots before ://
    return found[: letter.start()] + redact_url(found[letter.start() :])


def redact_url(url: str) -> str:
    """``scheme://user:pw@host:port/path?q#f`` -> ``scheme://***@host:port/path?***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1:
            end = min(end, at)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = f"{HIDDEN}@{authority.rpartition('@')[2]}"
    path, qmark, _ = tail.partition("?")
    path, hashmark, _ = path.partition("#")
    if qmark:
        path += f"?{HIDDEN}"
    elif hashmark:
        path += f"#{HIDDEN}"
    return f"{scheme}://{authority}{path}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (see :func:`redact_url`)."""
    if "://" not in text:
        return text
    return _URL.sub(_redact_match, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) with its URLs redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        redacted = redact_urls(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


def redact_log_records(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root), once.
    A handler filter sees the records of every logger that propagates to it."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
