"""Personal data handling: keyed pseudonyms and free-text scrubbing.

Customer ids, phone numbers and e-mail addresses become ``HMAC-SHA256(key, normalised value)``
(truncated to 128 bits, hex): stable, so analysts can count repeat contacts and join tables,
but not reversible without the key, and not guessable by hashing a phone book (unlike a plain
hash). Free text keeps its words but loses e-mail addresses and phone-number-like digit runs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 7+ digits, optionally with +, spaces, dots, dashes or parentheses between them.
_PHONE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().\-]{5,}\d(?![\w])")


class Pseudonymizer:
    """Keyed pseudonyms; one instance per key."""

    def __init__(self, key: str | bytes) -> None:
        self._key = key.encode() if isinstance(key, str) else key

    def token(self, value: str | None, kind: str = "id") -> str | None:
        """Pseudonym of ``value``; ``kind`` separates namespaces (a phone number and a customer
        id with the same digits get different tokens)."""
        if value is None or value == "":
            return None
        normalised = normalise_phone(value) if kind == "phone" else value.strip()
        mac = hmac.new(self._key, f"{kind}:{normalised}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]


def normalise_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return digits[-15:]


def scrub_text(text: str | None) -> str | None:
    """Remove e-mail addresses and phone numbers from free text."""
    if text is None:
        return None
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
