"""Renderers: pure data in, text or JSON-ready data out. No I/O, no printing."""
