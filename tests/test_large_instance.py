"""A 500 MiB multi-frame instance is received and autoloaded in a few MiB of memory.

bench/large.py does the work (`measure`): the receiver and the autoload steps run in
processes of their own, and their peak resident memory comes from ``wait4()``.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import require_dcmtk

MIB = 500
GROWTH_MIB = 64
"""What receiving or autoloading the instance may add to a process's memory, at most."""


def _bench() -> ModuleType:
    path = Path(__file__).parents[1] / "bench" / "large.py"
    spec = importlib.util.spec_from_file_location("bench_large", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_500_mib_instance_is_streamed_through(capsys: pytest.CaptureFixture[str]) -> None:
    require_dcmtk()
    with tempfile.TemporaryDirectory() as folder:  # 1 GiB on disk at most, gone after
        figures = _bench().measure(MIB, Path(folder))
    with capsys.disabled():
        print("\nlarge instance:", json.dumps(figures))
    assert figures["instance_mib"] >= MIB
    assert figures["landed"] == 1 and figures["landed_intact"]
    assert figures["autoload_archived"] == 1 and figures["autoload_quarantined"] == {}
    assert figures["archived_intact"] and figures["landing_left"] == 0
    receiver_growth = figures["receiver_peak_rss_mib"] - figures["receiver_idle_rss_mib"]
    autoload_growth = figures["autoload_peak_rss_mib"] - figures["autoload_rss_before_mib"]
    assert receiver_growth < GROWTH_MIB, figures
    assert autoload_growth < GROWTH_MIB, figures
    # Whole processes, their own libraries included (the receiver's idle is ~120 MiB).
    assert figures["receiver_peak_rss_mib"] < MIB * 2 / 3, figures
    assert figures["autoload_peak_rss_mib"] < MIB * 2 / 3, figures
