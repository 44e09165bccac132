"""Prefect flows of dicomflow (autoload), the settings they share and the `dicomflow` CLI."""
