"""Benchmarks: each runs as a script (``python bench/NAME.py``); a package only so that mypy
tells ``bench/chat.py`` from the ``chat`` app."""
