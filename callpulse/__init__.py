"""callpulse: real-time KPIs and early warnings for contact centers."""

__version__ = "0.1.0"
