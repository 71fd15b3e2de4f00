"""amx-export: deploy LLMs in AMXFP4 (4-bit microscaling with per-sign scales)."""

__version__ = "0.1.0"
