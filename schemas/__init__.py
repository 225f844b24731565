"""Event contracts (pydantic v2): input events, emitted records, decoding and personal data."""
