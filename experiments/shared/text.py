"""Real text for experiments that run a real model (quality scores it, serve cuts its prompts from it): CPython's
pydoc topics, which every Python ships (about 465,000 characters of English documentation), or a user's file."""

from __future__ import annotations

from pathlib import Path

from experiments.framework.spec import ConfigError


def read_text(spec: str, key: str = "text") -> str:
    """``pydoc`` (CPython's pydoc topics, joined in sorted order) or a UTF-8 file's text; ``key`` names the knob in
    the one-line error for a file that cannot be read or is empty."""
    if spec == "pydoc":
        from pydoc_data.topics import topics

        return "".join(topics[k] for k in sorted(topics))
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}={spec}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
    if not text.strip():
        raise ConfigError(f"{key}={spec}: the file is empty")
    return text
