"""Peer-supplied text made safe to put in a log line."""


def printable(text: str) -> str:
    """A peer-supplied string safe for a log line: control characters shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)
