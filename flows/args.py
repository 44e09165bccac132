"""Argument types shared by the `dicomflow` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`, or a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high:_}, not {text}")
        return value

    parse.__name__ = "whole number"  # argparse's fallback message names the type
    return parse


def iso_date(text: str) -> date:
    """A day as YYYY-MM-DD, or a one-line argparse error."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {text!r}") from None
