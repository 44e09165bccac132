"""Argument types shared by the `dicomflow` commands."""

from __future__ import annotations

import argparse
from datetime import date


def positive_int(text: str) -> int:
    """A whole number of 1 or more, or a one-line argparse error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def iso_date(text: str) -> date:
    """A day as YYYY-MM-DD, or a one-line argparse error."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {text!r}") from None
