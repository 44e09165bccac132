"""Settings: file, environment, defaults, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DICOMFLOW_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_defaults_live_under_one_data_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path / "root"))
    settings = load_settings()
    assert settings.receiver.host == "127.0.0.1"
    assert settings.receiver.max_pdu == 65536
    assert settings.landing == tmp_path / "root" / "landing"
    assert settings.archive == tmp_path / "root" / "archive"
    assert settings.quarantine == tmp_path / "root" / "quarantine"
    assert settings.catalog_location == str(tmp_path / "root" / "catalog")


def test_environment_overrides_file(monkeypatch, tmp_path: Path) -> None:
    path = write(
        tmp_path, '[receiver]\nae_title = "SITE_AE"\nport = 104\n[autoload]\nbatch_size = 7\n'
    )
    monkeypatch.setenv("DICOMFLOW_RECEIVER__PORT", "4242")
    settings = load_settings(path)
    assert settings.receiver.ae_title == "SITE_AE"
    assert settings.receiver.port == 4242
    assert settings.autoload.batch_size == 7


def test_config_from_environment_variable(monkeypatch, tmp_path: Path) -> None:
    path = write(tmp_path, f'archive_dir = "{tmp_path / "elsewhere"}"\n')
    monkeypatch.setenv("DICOMFLOW_CONFIG", str(path))
    assert load_settings().archive == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[receiver]\nport = 70000\n", "receiver.port"),
        ('[receiver]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n', "receiver.ae_title"),
        ("[receiver]\nportt = 1\n", "receiver.portt"),
        ("[autoload]\ninterval_seconds = -5\n", "autoload.interval_seconds"),
        ("[receiver\n", "not valid TOML"),
        ("[receiver]\nmax_pdu = 1099511627776\n", "receiver.max_pdu"),
        ("[receiver]\nacse_timeout = inf\n", "receiver.acse_timeout"),
        ("[autoload]\ninterval_seconds = inf\n", "autoload.interval_seconds"),
        ('data_dir = ""\n', "data_dir"),
        ('landing_dir = "/x/in"\nquarantine_dir = "/x/in"\n', "folders must differ"),
        ('[anonymize]\nsalt = "  "\n', "anonymize.salt"),
    ],
)
def test_bad_file_gives_one_line_naming_it(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert names in message and "\n" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_salt_is_created_once_and_kept(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path))
    first = load_settings().salt()
    second = load_settings().salt()
    assert first == second and len(first) >= 32
    key = tmp_path / "secrets" / "anonymization.salt"
    assert key.stat().st_mode & 0o077 == 0


def test_empty_key_file_is_an_error_not_an_empty_key(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path))
    key = tmp_path / "secrets" / "anonymization.salt"
    key.parent.mkdir()
    key.write_text("")
    with pytest.raises(SettingsError, match="is empty"):
        load_settings().salt()


def test_a_misspelled_variable_is_named_not_ignored(monkeypatch, tmp_path) -> None:
    from flows.settings import SettingsError, load_settings

    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DICOMFLOW_NODES__PACS__HOST", "pacs.example")
    monkeypatch.setenv("DICOMFLOW_NODES__PACS__AE_TITLE", "PACS")
    monkeypatch.setenv("DICOMFLOW_NODES__PACS__PORT", "104")
    assert load_settings().nodes["pacs"].port == 104
    monkeypatch.setenv("DICOMFLOW_RECEIVER_HOST", "0.0.0.0")
    with pytest.raises(SettingsError, match="did you mean DICOMFLOW_RECEIVER__HOST"):
        load_settings()
