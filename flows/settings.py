"""The one typed settings object: a TOML file, overridden by ``DICOMFLOW_*`` variables.

Precedence, highest first: environment variables (``DICOMFLOW_DATA_DIR``,
``DICOMFLOW_RECEIVER__PORT``, ...), the TOML file (``--config`` or
``DICOMFLOW_CONFIG``), the defaults below. Build it once at the entry point with
`load_settings` and pass it down.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from receiver.move_ledger import MoveLedger, ledger_dir
from receiver.settings import ReceiverSettings, RemoteNode, ScuSettings
from tasks.profile import check_options

if TYPE_CHECKING:
    from catalog.store import CatalogStore
    from receiver.qr_scp import Archive

CONFIG_ENV = "DICOMFLOW_CONFIG"


class SettingsError(Exception):
    """A missing or invalid setting; the message is one line naming it."""


class AutoloadSettings(BaseModel):
    """How often and in what batches landed files are processed."""

    model_config = {"extra": "forbid"}

    interval_seconds: float = Field(
        60.0, gt=0, le=7 * 86400, allow_inf_nan=False, description="Seconds between scheduled runs."
    )
    batch_size: int = Field(200, ge=1, le=100_000, description="Landed files per Prefect task.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Batches archived at once, each in a process of its own (1: one after "
        "another in the flow's process). With dask_address, the cluster's workers decide.",
    )
    dask_address: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        description="Scheduler of a Dask cluster (e.g. tcp://10.0.0.5:8786) to archive batches "
        "on; its workers must see landing, archive and quarantine at the same paths. "
        "Unset: batches run on this machine.",
    )
    prefect_port: int = Field(
        4200,
        ge=1,
        le=65535,
        description="Port of the Prefect server that `serve` starts if PREFECT_API_URL is unset.",
    )


class AnonymizeSettings(BaseModel):
    """Keys and rules of the anonymizer."""

    model_config = {"extra": "forbid"}

    salt: SecretStr | None = Field(
        None,
        description=(
            "Secret key for pseudonyms and UID remapping. Unset: a random key is created "
            "once in <data_dir>/secrets/anonymization.salt and reused."
        ),
    )

    @field_validator("salt")
    @classmethod
    def _salt_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty (leave it unset to have one generated)")
        return value

    options: list[str] = Field(
        default_factory=list,
        description=(
            "PS3.15 Table E.1-1 options on top of the Basic Profile, e.g. "
            '["retain-patient-characteristics", "retain-long-modified-dates"]. '
            "See docs/anonymization.md."
        ),
    )
    site_rules: Path | None = Field(
        None,
        description="TOML site rules applied on top of the profile (docs/anonymization.md).",
    )
    burned_in: Literal["quarantine", "flag"] = Field(
        "quarantine",
        description=(
            "Instances declaring BurnedInAnnotation YES: quarantine them, or archive them "
            "flagged (catalog column burned_in_suspect)."
        ),
    )
    mapping_table: bool = Field(
        False,
        description=(
            "Write original -> pseudonym rows (patient and study) to "
            "<data_dir>/secrets/mapping/, readable by the owner only, never in the catalog."
        ),
    )

    @field_validator("options")
    @classmethod
    def _options_compatible(cls, value: list[str]) -> list[str]:
        check_options(value)
        return sorted(set(value))


TIME_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class RetrieveSettings(BaseModel):
    """How the retrieve flow treats a PACS: gently, in its window, and not when it is down."""

    model_config = {"extra": "forbid"}

    window: str | None = Field(
        None,
        description=(
            'Local time window for C-MOVEs, "HH:MM-HH:MM" (may wrap midnight, e.g. '
            '"20:00-06:00"); unset: any time.'
        ),
    )
    outside_window: Literal["wait", "stop"] = Field(
        "wait",
        description="Outside the window: wait for it to open, or stop (a re-run does the rest).",
    )
    retries: int = Field(
        3, ge=0, le=20, description="Retries of a study after a transient failure (busy, timeout)."
    )
    retry_delay_seconds: float = Field(
        30.0,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description="Delay before the first retry; doubled for each further one.",
    )
    max_rerequests: int = Field(
        2,
        ge=0,
        le=10,
        description="Rounds of re-requesting the missing series (then images) of a short study.",
    )
    breaker_failures: int = Field(
        3,
        ge=1,
        le=100,
        description="Consecutive echo or association failures that open a node's circuit breaker.",
    )
    breaker_cooldown_seconds: float = Field(
        600.0,
        gt=0,
        le=7 * 86400,
        allow_inf_nan=False,
        description="How long a node with an open breaker is left alone.",
    )
    autoload_wait_seconds: float = Field(
        600.0,
        ge=0,
        le=86400,
        allow_inf_nan=False,
        description=(
            "How long the completeness check waits for a running autoload to finish "
            "before it counts what is archived."
        ),
    )

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.replace(" ", "")
        if not TIME_WINDOW.match(text):
            raise ValueError(f'{value!r} is not "HH:MM-HH:MM" (24-hour clock)')
        start, end = text.split("-")
        if start == end:
            raise ValueError("the window must not start and end at the same time")
        return text


class CatalogSettings(BaseModel):
    """What the catalog records and how its storage is kept."""

    model_config = {"extra": "forbid"}

    record_unit: Literal["patient", "study", "series"] = Field(
        "study",
        description=(
            "What one row of the records table describes. A record is created the first "
            "time a unit is seen and gets a new version whenever more of it arrives."
        ),
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "fsspec options for a catalog_dir that is a URL (e.g. s3://...), such as "
            '{"profile": "research"}; see docs/catalog.md.'
        ),
    )
    keep_replaced_seconds: float = Field(
        86400.0,
        ge=0,
        le=365 * 86400,
        allow_inf_nan=False,
        description=(
            "How long parts merged away by compaction stay on disk, for connections "
            "opened before it; a connection older than this must reconnect."
        ),
    )
    compact_interval_seconds: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        allow_inf_nan=False,
        description="Seconds between the compactions `serve` runs.",
    )


class Settings(BaseSettings):
    """Everything dicomflow needs to run, in one object."""

    model_config = SettingsConfigDict(
        env_prefix="DICOMFLOW_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(
        Path("dicomflow-data"),
        description="Data root; landing/, archive/, quarantine/ and catalog/ go beneath it.",
    )
    landing_dir: Path | None = Field(None, description="Received files waiting for autoload.")
    archive_dir: Path | None = Field(None, description="Anonymized archive.")
    quarantine_dir: Path | None = Field(None, description="Files autoload could not process.")
    catalog_dir: str | None = Field(
        None,
        description=(
            "Parquet tables of the catalog: a folder, or an fsspec URL such as "
            "s3://bucket/dicomflow/catalog (catalog.storage_options for credentials)."
        ),
    )
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    autoload: AutoloadSettings = Field(default_factory=AutoloadSettings)
    anonymize: AnonymizeSettings = Field(default_factory=AnonymizeSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    scu: ScuSettings = Field(default_factory=ScuSettings)
    retrieve: RetrieveSettings = Field(default_factory=RetrieveSettings)
    nodes: dict[str, RemoteNode] = Field(
        default_factory=dict,
        description="Remote DICOM nodes by name, as [nodes.NAME] tables: ae_title, host, port.",
    )

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, value: dict[str, RemoteNode]) -> dict[str, RemoteNode]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", name) or "@" in name:
                raise ValueError(f"node name {name!r}: letters, digits, '_', '-' and '.' only")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init values carry the config file, so the environment must rank above them.
        return (env_settings, init_settings)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_given(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("catalog_dir", mode="before")
    @classmethod
    def _catalog_dir_text(cls, value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _folders_distinct(self) -> Settings:
        seen: dict[Path, str] = {}
        for name, folder in self.folders().items():
            key = folder.expanduser().absolute()
            if key in seen:
                raise ValueError(f"the {name} and {seen[key]} folders must differ ({folder})")
            seen[key] = name
        return self

    def folders(self) -> dict[str, Path]:
        """The working folders by name (the catalog only where it is a local folder)."""
        found = {"landing": self.landing, "archive": self.archive, "quarantine": self.quarantine}
        if self.catalog_folder is not None:
            found["catalog"] = self.catalog_folder
        return found

    # Folders not set one by one live under the data root.
    @property
    def landing(self) -> Path:
        return self.landing_dir or self.data_dir / "landing"

    @property
    def archive(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_dir or self.data_dir / "quarantine"

    @property
    def catalog_location(self) -> str:
        """The catalog's folder or fsspec URL, for `catalog.connect`."""
        return self.catalog_dir or str(self.data_dir / "catalog")

    @property
    def catalog_folder(self) -> Path | None:
        """The catalog's local folder; None when it is on another filesystem (a URL)."""
        location = self.catalog_location
        if location.startswith("file://"):
            return Path(location.removeprefix("file://"))
        if "://" in location or "::" in location:
            return None
        return Path(location)

    @property
    def logs_dir(self) -> Path:
        """Where the receiver appends receipts.jsonl."""
        return self.data_dir / "logs"

    def catalog_store(self) -> CatalogStore:
        """The catalog as its readers and writers open it; writers lock under the data root."""
        from catalog.store import CatalogStore  # pyarrow and fsspec only where needed

        return CatalogStore(self.catalog_location, self.catalog.storage_options, self.catalog_lock)

    @property
    def catalog_lock(self) -> Path | None:
        """The writers' lock of a catalog that is a URL; a local one keeps its own."""
        return None if self.catalog_folder is not None else self.data_dir / "catalog.lock"

    @property
    def retrieve_dir(self) -> Path:
        """Retrieval jobs' outcome tables and breaker state; holds original identifiers."""
        return self.data_dir / "retrieve"

    def served_archive(self) -> Archive:
        """What the receiver's Q/R SCP answers from: the catalog, sending to our nodes."""
        from receiver.qr_scp import Archive  # pynetdicom: only for the commands that serve

        return Archive(self.catalog_store(), self.nodes)

    def move_ledger(self) -> MoveLedger:
        """Our open C-MOVEs, shared by the retrieve side and the receiver."""
        return MoveLedger(ledger_dir(self.data_dir))

    @property
    def mapping_dir(self) -> Path:
        """Where the optional original -> pseudonym table goes: beside the salt, not the catalog."""
        return self.data_dir / "secrets" / "mapping"

    def salt(self) -> bytes:
        """The anonymization key: configured, or created once under the data root."""
        if self.anonymize.salt is not None:
            value = self.anonymize.salt.get_secret_value()
            if not value:
                raise SettingsError("anonymize.salt: must not be empty")
            return value.encode()
        path = self.data_dir / "secrets" / "anonymization.salt"
        try:
            return self._read_or_create_salt(path)
        except OSError as exc:
            raise SettingsError(f"anonymization key {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _read_or_create_salt(path: Path) -> bytes:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                pass
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                    fh.flush()
                    os.fsync(fh.fileno())
        key = path.read_text().strip()
        if not key:
            raise SettingsError(
                f"anonymization key {path} is empty: restore it, or delete it for a new one"
            )
        return key.encode()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{name}: {first['msg']}{suffix}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (directly or optionally), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def environment_names(model: type[BaseModel], prefix: str = "DICOMFLOW_") -> set[str]:
    """Every DICOMFLOW_ variable the settings read; a table of tables (nodes) as a prefix."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{prefix}{name.upper()}"
        names.add(key)
        nested = _model_of(field.annotation)
        if typing.get_origin(field.annotation) is dict:
            names.add(key + "__*")  # named tables: DICOMFLOW_NODES__<NAME>__HOST
        elif nested is not None:
            names |= environment_names(nested, key + "__")
    return names


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """DICOMFLOW_ variables no setting reads: a typo would otherwise be ignored silently."""
    known = environment_names(Settings) | {CONFIG_ENV}
    prefixes = tuple(name[:-1] for name in known if name.endswith("*"))
    return sorted(
        name
        for name in environ
        if name.startswith("DICOMFLOW_") and name not in known and not name.startswith(prefixes)
    )


def load_settings(config_file: Path | str | None = None) -> Settings:
    """Read the TOML config (argument, else ``DICOMFLOW_CONFIG``) and the environment.

    Raises SettingsError with one line naming the bad setting, or a DICOMFLOW_
    variable that names no setting.
    """
    unknown = unknown_variables(os.environ)
    if unknown:
        known = sorted(environment_names(Settings))
        hint = difflib.get_close_matches(unknown[0], known, n=1)
        maybe = f" (did you mean {hint[0]}?)" if hint else ""
        raise SettingsError(f"unknown setting variable {unknown[0]}{maybe}")
    path_text = config_file or os.environ.get(CONFIG_ENV)
    values: dict[str, Any] = {}
    source = ""
    if path_text:
        path = Path(path_text)
        source = str(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {path} unreadable: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = f"in {source} or a DICOMFLOW_ variable" if path_text else "in a DICOMFLOW_ variable"
        raise SettingsError(f"invalid setting {_describe(exc)} ({where})") from None
    except PydanticSettingsError as exc:  # a list or table in a variable that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        prefix = f"DICOMFLOW_{field[1].upper()}__*" if field else "DICOMFLOW_*"
        raise SettingsError(
            f"a {prefix} variable is not valid JSON: lists are written as JSON, e.g. "
            """DICOMFLOW_ANONYMIZE__OPTIONS='["clean-descriptors"]'"""
        ) from None
