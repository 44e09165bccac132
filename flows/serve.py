"""`dicomflow serve`: the receiver plus the autoload flow on its interval (and catalog
compaction on its own), in one process.

Prefect schedules only against a real API server: if none is configured
(``PREFECT_API_URL``), one is started on 127.0.0.1 for the life of the command,
which also gives the Prefect UI. Ctrl-C (or SIGTERM) stops the scheduler, lets a
running autoload finish its current step, then stops the receiver and the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from flows.settings import Settings
from receiver.pool import die_with_parent
from receiver.settings import ReceiverSettings

LOGGER = logging.getLogger("dicomflow.serve")


class ServeError(Exception):
    """`serve` cannot start; the message says what to change."""


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def prefect_api(port: int, timeout: float = 120.0) -> Iterator[str]:
    """The configured Prefect API, or a ``prefect server`` started here and stopped after."""
    from prefect.settings import PREFECT_API_URL

    configured = PREFECT_API_URL.value()
    if configured:
        yield str(configured)
        return
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url):  # a server the user started already
        os.environ["PREFECT_API_URL"] = api_url
        yield api_url
        return
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    # The UI asks the API at 4200 unless told where it is.
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": api_url}
    # Its own session: a Ctrl-C in the terminal must not stop it before the runner is done.
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(api_url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise ServeError(
                    f"the Prefect server did not start on 127.0.0.1:{port} (port in use? "
                    "set autoload.prefect_port or PREFECT_API_URL)"
                )
            time.sleep(0.5)
        LOGGER.info("Prefect server and UI at http://127.0.0.1:%d", port)
        os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes too
        yield api_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def serve(settings: Settings, receiver_settings: ReceiverSettings) -> None:
    """Run the receiver and the scheduled autoload until SIGINT or SIGTERM."""
    from functools import partial

    from flows.logs import configure_logging
    from receiver.access import AccessError, access_policy
    from receiver.pool import start_pool
    from receiver.tls import TlsError, server_context

    try:  # refuse a receiver that cannot start before starting Prefect for it
        access_policy(receiver_settings)
        if receiver_settings.tls is not None:
            server_context(receiver_settings.tls)
    except (AccessError, TlsError) as exc:
        raise ServeError(str(exc)) from None

    # Until the runner takes over the signals, SIGTERM unwinds like Ctrl-C, so the
    # Prefect server started below is always stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)

    with prefect_api(settings.autoload.prefect_port):
        from prefect.client.schemas.objects import (
            ConcurrencyLimitConfig,
            ConcurrencyLimitStrategy,
        )
        from prefect.runner import Runner
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.autoload import autoload
        from flows.compact import catalog_compact

        with temporary_settings({PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
            receivers = start_pool(
                receiver_settings,
                settings.landing,
                settings.move_ledger(),
                settings.served_archive(),
                log_setup=partial(configure_logging, settings.data_dir),
            )
            try:
                interval = settings.autoload.interval_seconds
                runner = Runner(
                    name="dicomflow-serve",
                    pause_on_shutdown=False,
                    query_seconds=min(10.0, interval),  # look for due runs as often as they come
                )
                runner.add_flow(
                    autoload,
                    name="autoload-serve",
                    interval=interval,
                    description="Autoload on an interval, started by `dicomflow serve`.",
                    tags=["dicomflow", "autoload"],
                    # One run at a time; a run due while one works is dropped, not queued.
                    concurrency_limit=ConcurrencyLimitConfig(
                        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
                    ),
                )
                runner.add_flow(
                    catalog_compact,
                    name="catalog-compact-serve",
                    interval=settings.catalog.compact_interval_seconds,
                    description="Catalog compaction on an interval, started by `dicomflow serve`.",
                    tags=["dicomflow", "catalog"],
                    concurrency_limit=ConcurrencyLimitConfig(
                        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
                    ),
                )
                # Ctrl-C takes the runner's graceful path, like SIGTERM does.
                signal.signal(signal.SIGINT, runner.handle_sigterm)
                LOGGER.info(
                    "autoload every %.0f s; Ctrl-C stops", settings.autoload.interval_seconds
                )
                asyncio.run(runner.start())
            finally:
                receivers.stop()
