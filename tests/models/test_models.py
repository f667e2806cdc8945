"""Model manager: catalogue, lookup, mfcc.conf reading, and downloads from a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import shutil
import socket
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from callguard.core.config import Config
from callguard.core.errors import ConfigError, ModelError
from callguard.models.catalogue import (
    DEFAULT_CATALOGUE,
    KOREAN_PACKAGE_MODEL,
    CatalogueEntry,
    cmd_download,
    cmd_list,
    cmd_path,
    download_model,
    installed_models,
    is_model_dir,
    korean_package_model,
    load_catalogue,
    missing_model_notice,
    model_allows_upsample,
    model_for_language,
    model_sample_rate,
    models_dir,
    resolve_model,
)

MODEL = "vosk-model-test-0.1"


# ---------------------------------------------------------------------------
# Helpers: model folders, zips and a local HTTP server


def make_model_folder(path: Path, mfcc: str = "--use-energy=false\n") -> Path:
    (path / "am").mkdir(parents=True)
    (path / "conf").mkdir()
    (path / "graph").mkdir()
    (path / "am" / "final.mdl").write_bytes(b"mdl")
    (path / "conf" / "mfcc.conf").write_text(mfcc)
    (path / "graph" / "HCLr.fst").write_bytes(b"fst")
    return path


def make_model_zip(top: str = MODEL, *, layout: bool = True, extra: dict[str, bytes] | None = None) -> bytes:
    """A tiny zip shaped like an official vosk archive: TOP/am, TOP/conf, TOP/graph."""
    members = {f"{top}/README": b"test model\n", f"{top}/conf/model.conf": b"--min-active=200\n"}
    if layout:
        members |= {
            f"{top}/am/final.mdl": b"acoustic model placeholder",
            f"{top}/conf/mfcc.conf": b"--sample-frequency=16000\n--use-energy=false\n",
            f"{top}/graph/HCLr.fst": b"graph placeholder",
            f"{top}/graph/Gr.fst": b"graph placeholder",
        }
    members |= extra or {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class TruncatingHandler(QuietHandler):
    """Announces more bytes than it sends, then closes: a connection lost mid-download."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"PK\x03\x04 only the start")
        self.close_connection = True


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A ThreadingHTTPServer on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    root = tmp_path_factory.mktemp("served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def serve(http_root: tuple[Path, str]) -> Callable[[str, bytes], str]:
    """Publish bytes under a file name; return its URL."""
    root, base = http_root

    def publish(filename: str, data: bytes) -> str:
        (root / filename).write_bytes(data)
        return f"{base}/{filename}"

    return publish


def entry(url: str, digest: str, name: str = MODEL) -> CatalogueEntry:
    return CatalogueEntry(
        name=name,
        lang="en",
        size_mb=0.001,
        url=url,
        sha256=digest,
        rate=16000,
        description="test model",
        checksum_source="built by the test" if digest else "",
    )


def config_with(models: Path, **asr: str) -> Config:
    return Config().with_overrides(asr={"models_dir": str(models), **asr})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


# ---------------------------------------------------------------------------
# Catalogue


def test_shipped_catalogue_lists_official_english_and_french_models() -> None:
    catalogue = load_catalogue()
    assert {
        "vosk-model-small-en-us-0.15",
        "vosk-model-en-us-0.22",
        "vosk-model-small-fr-0.22",
        "vosk-model-fr-0.22",
    } <= set(catalogue)
    assert {e.lang for e in catalogue.values()} >= {"en", "fr"}
    for name, e in catalogue.items():
        assert e.url == f"https://alphacephei.com/vosk/models/{name}.zip"
        assert e.rate == 16000
        assert e.size_mb > 0 and e.description
        # Every pinned checksum says where it was found; unpinned ones are empty, never invented.
        assert e.sha256 == "" or (re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.checksum_source)
    # The small English model's checksum is pinned in public projects (design.md).
    small_en = catalogue["vosk-model-small-en-us-0.15"]
    assert small_en.sha256 == "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498"
    assert DEFAULT_CATALOGUE.name == "catalogue.toml"


GOOD_ENTRY = """
[[model]]
name = "m"
lang = "en"
size_mb = 40
url = "https://example.org/m.zip"
sha256 = ""
rate = 16000
description = "d"
checksum_source = ""
"""


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('sha256 = ""', 'sha256 = "abc"'), "model[0].sha256", "64 lowercase hex"),
        (
            ('sha256 = ""', f'sha256 = "{"a" * 64}"'),
            "model[0].checksum_source",
            "where the sha256 was found",
        ),
        (("rate = 16000", "rate = 7"), "model[0].rate", "between 8000 and 48000"),
        (("rate = 16000", 'rate = "16000"'), "model[0].rate", "integer"),
        (('lang = "en"', 'lang = "en"\ncolour = "red"'), "model[0].colour", "unknown key"),
        (('description = "d"\n', ""), "model[0].description", "missing"),
        (('url = "https://example.org/m.zip"', 'url = "ftp://x/m.zip"'), "model[0].url", "http(s) URL"),
        (('name = "m"', 'name = "../m"'), "model[0].name", "plain folder name"),
    ],
)
def test_catalogue_errors_name_the_key(
    tmp_path: Path, change: tuple[str, str], key: str, problem: str
) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(GOOD_ENTRY.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_catalogue_rejects_duplicates_and_reads_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(GOOD_ENTRY)
    assert load_catalogue(path)["m"].size_mb == 40.0
    path.write_text(GOOD_ENTRY + GOOD_ENTRY)
    with pytest.raises(ConfigError, match=r"model\[1\]\.name: duplicate model name 'm'"):
        load_catalogue(path)
    with pytest.raises(ConfigError, match="not found"):
        load_catalogue(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------
# Model folders and mfcc.conf


def test_is_model_dir_and_installed_models(models: Path) -> None:
    make_model_folder(models / "b-model")
    make_model_folder(models / "a-model")
    make_model_folder(models / ".a-model-x.unpack")  # an interrupted download's temp folder
    (models / "not-a-model").mkdir()
    (models / "not-a-model" / "notes.txt").write_text("x")
    flat = models / "old-flat-model"  # vosk's pre-0.15 layout
    flat.mkdir()
    (flat / "final.mdl").write_bytes(b"m")
    (flat / "mfcc.conf").write_text("--use-energy=false\n")
    assert [p.name for p in installed_models(models)] == ["a-model", "b-model", "old-flat-model"]
    assert not is_model_dir(models / "not-a-model")
    assert not is_model_dir(models / "absent")
    assert installed_models(models / "absent") == []


def test_korean_package_model_is_real_and_allows_upsampling() -> None:
    path = resolve_model(KOREAN_PACKAGE_MODEL, Config())
    assert path is not None and is_model_dir(path)
    assert (path / "am" / "final.mdl").stat().st_size > 1_000_000  # the real acoustic model
    assert model_sample_rate(path) == 16000
    assert model_allows_upsample(path)


def test_korean_model_without_allow_upsample_line(tmp_path: Path) -> None:
    copy = tmp_path / "ko-no-upsample"
    shutil.copytree(korean_package_model() / "conf", copy / "conf")
    (copy / "am").mkdir()
    mfcc = copy / "conf" / "mfcc.conf"
    mfcc.write_text(
        "".join(line for line in mfcc.read_text().splitlines(True) if "allow-upsample" not in line)
    )
    assert is_model_dir(copy)
    assert not model_allows_upsample(copy)
    assert model_sample_rate(copy) == 16000


@pytest.mark.parametrize(
    ("mfcc", "rate", "upsample"),
    [
        ("--sample-frequency=8000\n--allow-upsample=true\n", 8000, True),
        ("# telephony model\n--sample-frequency 8000  # narrowband\n", 8000, False),
        ("--use-energy=false\n--allow-upsample=false\n", 16000, False),
    ],
)
def test_mfcc_conf_rate_and_upsample(tmp_path: Path, mfcc: str, rate: int, upsample: bool) -> None:
    path = make_model_folder(tmp_path / "m", mfcc)
    assert model_sample_rate(path) == rate
    assert model_allows_upsample(path) is upsample


def test_bad_sample_frequency_names_the_file(tmp_path: Path) -> None:
    path = make_model_folder(tmp_path / "m", "--sample-frequency=fast\n")
    with pytest.raises(ModelError, match=r"mfcc\.conf: --sample-frequency must be a number, got 'fast'"):
        model_sample_rate(path)


# ---------------------------------------------------------------------------
# resolve_model / model_for_language / notice


def test_resolve_model_by_path_name_and_catalogue(tmp_path: Path, models: Path) -> None:
    config = config_with(models)
    make_model_folder(models / "vosk-model-small-en-us-0.15")
    make_model_folder(models / "my-own-model")
    elsewhere = make_model_folder(tmp_path / "elsewhere" / "model")

    assert resolve_model("vosk-model-small-en-us-0.15", config) == models / "vosk-model-small-en-us-0.15"
    assert resolve_model("my-own-model", config) == models / "my-own-model"
    assert resolve_model(str(elsewhere), config) == elsewhere
    assert resolve_model("vosk-model-small-fr-0.22", config) is None  # in the catalogue, not downloaded

    with pytest.raises(ModelError, match=r"not a vosk model folder"):
        resolve_model(str(tmp_path), config)
    with pytest.raises(ModelError, match=r"no such folder"):
        resolve_model(str(tmp_path / "nowhere"), config)
    with pytest.raises(ModelError) as caught:
        resolve_model("vosk-model-klingon-9", config)
    message = str(caught.value)
    assert "vosk-model-klingon-9" in message
    assert "vosk-model-small-en-us-0.15" in message and KOREAN_PACKAGE_MODEL in message
    assert "installed: my-own-model" in message


def test_model_for_language_prefers_override_then_model_then_language(tmp_path: Path, models: Path) -> None:
    make_model_folder(models / "vosk-model-small-en-us-0.15")
    make_model_folder(models / "fr-custom")
    config = config_with(models, model_fr="fr-custom")
    assert model_for_language(config, "en") == models / "vosk-model-small-en-us-0.15"
    assert model_for_language(config, "fr") == models / "fr-custom"
    assert model_for_language(config, "en", override="fr-custom") == models / "fr-custom"
    assert model_for_language(config, "fr", override=KOREAN_PACKAGE_MODEL) == korean_package_model()

    single = config_with(models, model="fr-custom")
    assert model_for_language(single, "en") == models / "fr-custom"

    not_downloaded = config_with(models, model_fr="vosk-model-fr-0.22")
    assert model_for_language(not_downloaded, "fr") is None
    with pytest.raises(ValueError, match="'de'"):
        model_for_language(config, "de")


def test_model_path_in_config_is_relative_to_config_folder(tmp_path: Path, models: Path) -> None:
    config_dir = tmp_path / "etc"
    make_model_folder(config_dir / "speech" / "en")
    config = replace(config_with(models, model_en="speech/en"), base_dir=config_dir)
    assert model_for_language(config, "en") == (config_dir / "speech" / "en").resolve()


def test_missing_model_notice_says_what_happens_and_how_to_fix_it() -> None:
    assert missing_model_notice("vosk-model-small-en-us-0.15", "en") == (
        "No speech model installed for English (vosk-model-small-en-us-0.15): running on sound alone "
        "(loudness, shouting). Get one with: callguard models download vosk-model-small-en-us-0.15"
    )
    french = missing_model_notice("vosk-model-small-fr-0.22", "fr")
    assert "French" in french and "callguard models download vosk-model-small-fr-0.22" in french
    assert "callguard models list" in missing_model_notice("", "fr")


# ---------------------------------------------------------------------------
# Downloads against a real local HTTP server


def test_download_good_archive_unpacks_verified_model(
    models: Path, serve: Callable[[str, bytes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_model_zip()
    catalogue = {MODEL: entry(serve("good.zip", data), sha256(data))}
    path = download_model(MODEL, models, catalogue)
    assert path == models / MODEL
    assert (path / "am" / "final.mdl").read_bytes() == b"acoustic model placeholder"
    assert model_sample_rate(path) == 16000
    assert sorted(p.name for p in models.iterdir()) == [MODEL]  # no archive, no temp folder left

    config = config_with(models)
    assert cmd_path(config, MODEL, catalogue) == 0
    assert capsys.readouterr().out.strip() == str(path)
    # Already installed: returned as is, even if the server no longer has it.
    assert download_model(MODEL, models, {MODEL: entry(serve("gone.zip", b""), sha256(data))}) == path


def test_download_wrong_checksum_leaves_nothing(models: Path, serve: Callable[[str, bytes], str]) -> None:
    data = make_model_zip()
    pinned = "0" * 64
    catalogue = {MODEL: entry(serve("tampered.zip", data), pinned)}
    with pytest.raises(ModelError) as caught:
        download_model(MODEL, models, catalogue)
    message = str(caught.value)
    assert MODEL in message and pinned in message and sha256(data) in message
    assert "checksum mismatch" in message and "\n" not in message
    assert list(models.iterdir()) == []


def test_download_broken_archive_names_file_and_leaves_nothing(
    models: Path, serve: Callable[[str, bytes], str]
) -> None:
    data = make_model_zip()[:-300] + b"\x00" * 300  # damaged central directory
    catalogue = {MODEL: entry(serve("broken-model.zip", data), sha256(data))}
    with pytest.raises(ModelError, match=r"broken-model\.zip is not a valid zip archive"):
        download_model(MODEL, models, catalogue)
    assert list(models.iterdir()) == []


def test_download_without_checksum_prints_sha_and_checks_layout(
    models: Path, serve: Callable[[str, bytes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_model_zip()
    path = download_model(MODEL, models, {MODEL: entry(serve("unpinned.zip", data), "")})
    assert is_model_dir(path)
    err = capsys.readouterr().err
    assert sha256(data) in err and "no citable checksum" in err


def test_download_without_checksum_rejects_wrong_layout(
    models: Path, serve: Callable[[str, bytes], str]
) -> None:
    data = make_model_zip(layout=False)
    with pytest.raises(
        ModelError, match=r"does not hold a vosk model: missing am/final\.mdl, conf/mfcc\.conf"
    ):
        download_model(MODEL, models, {MODEL: entry(serve("not-a-model.zip", data), "")})
    assert list(models.iterdir()) == []


def test_download_refuses_members_outside_the_folder(
    tmp_path: Path, models: Path, serve: Callable[[str, bytes], str]
) -> None:
    data = make_model_zip(extra={"../escaped.txt": b"x"})
    with pytest.raises(ModelError, match="unsafe member path"):
        download_model(MODEL, models, {MODEL: entry(serve("slip.zip", data), sha256(data))})
    assert list(models.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()


def test_download_archive_with_another_top_folder_is_installed_under_catalogue_name(
    models: Path, serve: Callable[[str, bytes], str]
) -> None:
    data = make_model_zip(top="model")
    path = download_model(MODEL, models, {MODEL: entry(serve("renamed.zip", data), sha256(data))})
    assert path == models / MODEL and is_model_dir(path)


def test_download_no_connection_is_one_clear_line(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/{MODEL}.zip"
    catalogue = {MODEL: entry(url, "")}
    with pytest.raises(ModelError, match=r"cannot reach http://127\.0\.0\.1:\d+/.*refused"):
        download_model(MODEL, models, catalogue)
    assert list(models.iterdir()) == []

    assert cmd_download(config_with(models), MODEL, catalogue) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if "cannot reach" in line)
    ]


def test_download_http_error_and_truncated_transfer(models: Path, http_root: tuple[Path, str]) -> None:
    _, base = http_root
    with pytest.raises(ModelError, match="server answered 404"):
        download_model(MODEL, models, {MODEL: entry(f"{base}/absent.zip", "")})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cut.zip"
        with pytest.raises(ModelError, match=f"{MODEL}.*(truncated|failed)"):
            download_model(MODEL, models, {MODEL: entry(url, "")})
    finally:
        server.shutdown()
        server.server_close()
    assert list(models.iterdir()) == []


def test_download_unknown_name_lists_known_models(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError, match=r"not in the catalogue \(known: vosk-model-small-en-us-0\.15, "):
        download_model("vosk-model-nope", models)
    assert cmd_download(config_with(models), "vosk-model-nope") == 2
    err = capsys.readouterr().err
    assert "unknown model 'vosk-model-nope'" in err and "vosk-model-small-fr-0.22" in err
    assert not models.exists()


def test_download_refuses_to_overwrite_a_foreign_folder(models: Path) -> None:
    (models / MODEL).mkdir(parents=True)
    (models / MODEL / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="exists but is not a vosk model folder"):
        download_model(MODEL, models, {MODEL: entry("http://127.0.0.1:9/x.zip", "")})
    assert (models / MODEL / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------
# CLI commands


def test_cmd_download_then_list_and_path(
    models: Path, serve: Callable[[str, bytes], str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_model_zip()
    catalogue = {
        MODEL: entry(serve("cli.zip", data), sha256(data)),
        "vosk-model-other-0.1": entry(serve("other.zip", data), "", name="vosk-model-other-0.1"),
    }
    config = config_with(models, model_en=MODEL)
    make_model_folder(models / "hand-copied")

    assert cmd_download(config, MODEL, catalogue) == 0
    out = capsys.readouterr().out
    assert out.strip() == str(models / MODEL)

    assert cmd_download(config, MODEL, catalogue) == 0  # second time: already installed
    assert "already installed" in capsys.readouterr().err

    assert cmd_list(config, catalogue) == 0
    listing = capsys.readouterr().out.splitlines()
    ours = next(line for line in listing if line.startswith(MODEL))
    assert "installed" in ours and "pinned" in ours and "configured for en" in ours
    other = next(line for line in listing if line.startswith("vosk-model-other-0.1"))
    assert "not installed" in other and "none" in other
    assert any("hand-copied" in line for line in listing)
    assert any(line.startswith(KOREAN_PACKAGE_MODEL) and "installed" in line for line in listing)

    assert cmd_path(config, "vosk-model-other-0.1", catalogue) == 1
    assert "callguard models download vosk-model-other-0.1" in capsys.readouterr().err
    assert cmd_path(config, "no-such-model", catalogue) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert cmd_path(config, KOREAN_PACKAGE_MODEL, catalogue) == 0
    assert capsys.readouterr().out.strip() == str(korean_package_model())


def test_models_dir_is_resolved_against_config_folder(tmp_path: Path) -> None:
    config = replace(Config().with_overrides(asr={"models_dir": "../models"}), base_dir=tmp_path / "config")
    assert models_dir(config) == (tmp_path / "models").resolve()
    assert (
        models_dir(Config()) == Path("~/.local/share/callguard/models").expanduser()
    )  # the user's data folder
