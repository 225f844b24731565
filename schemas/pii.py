"""Personal data handling: keyed pseudonyms and free-text scrubbing.

Customer ids, phone numbers and e-mail addresses become ``HMAC-SHA256(key, normalised value)``
(truncated to 128 bits, hex): stable, so analysts can count repeat contacts and join tables,
but not reversible without the key, and not guessable by hashing a phone book (unlike a plain
hash). Free text keeps its words but loses e-mail addresses and phone-number-like digit runs.
"""

from __future__ import annotations

import hashlib
import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 7+ digits, optionally with +, spaces, dots, dashes or parentheses between them.
_PHONE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().\-]{5,}\d(?![\w])")


_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Pseudonymizer:
    """Keyed pseudonyms; one instance per key.

    HMAC-SHA256 as RFC 2104 (and ``hmac.new``) defines it, with the keyed inner and outer hash
    states made once and copied per value: ``hmac.new`` rebuilds them on every call in Python
    code (about 5 us against 2 us here; copying a keyed ``hmac.new`` object, about 3 us), and the
    stream pseudonymises every identified contact.
    """

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) > _BLOCK:
            raw = hashlib.sha256(raw).digest()
        raw = raw.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(raw.translate(_IPAD))
        self._outer = hashlib.sha256(raw.translate(_OPAD))

    def token(self, value: str | None, kind: str = "id") -> str | None:
        """Pseudonym of ``value``; ``kind`` separates namespaces (a phone number and a customer
        id with the same digits get different tokens)."""
        if value is None or value == "":
            return None
        normalised = normalise_phone(value) if kind == "phone" else value.strip()
        inner = self._inner.copy()
        inner.update(f"{kind}:{normalised}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:32]


def normalise_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return digits[-15:]


def scrub_text(text: str | None) -> str | None:
    """Remove e-mail addresses and phone numbers from free text."""
    if text is None:
        return None
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
