"""Config: one TOML file, loaded into one validated, typed object; errors name the key."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from callguard.core.config import DEFAULT_CONFIG_FILE, AudioConfig, Config, load_config
from callguard.core.errors import ConfigError


def _sections(obj: object, prefix: str = "") -> dict[str, object]:
    """Every config section by its dotted TOML name ("serve.twilio" for [serve.twilio])."""
    found: dict[str, object] = {}
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if is_dataclass(value):
            found[prefix + f.name] = value
            found |= _sections(value, f"{prefix}{f.name}.")
    return found


SECTIONS = _sections(Config())


def section_keys(section: str) -> list[str]:
    """A section's own keys (its sub-sections are sections of their own)."""
    return [f.name for f in fields(SECTIONS[section]) if not is_dataclass(getattr(SECTIONS[section], f.name))]  # type: ignore[arg-type]


def section_default(section: str, key: str) -> object:
    return getattr(SECTIONS[section], key)


def write(tmp_path: Path, text: str, name: str = "callguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value), "the error names the file"
    return caught.value


# ---------------------------------------------------------------------------
# Loading


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "# nothing set\n"))
    assert config == Config(base_dir=tmp_path.resolve())


def test_values_are_read_and_typed(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[audio]\nrate = 8000\nframe_ms = 20\nstereo_roles = ["agent", "customer"]\n'
            "[loudness]\nmargin_db = 12\n"  # an int where a float is expected is accepted as a float
            "[vad]\naggressiveness = 3\n",
        )
    )
    assert config.audio.rate == 8000 and config.audio.frame_ms == 20
    assert config.audio.stereo_roles == ["agent", "customer"]
    assert config.loudness.margin_db == 12.0 and isinstance(config.loudness.margin_db, float)
    assert config.vad.aggressiveness == 3
    assert config.vad.padding_ms == 300  # untouched keys keep their default
    assert config.base_dir == tmp_path.resolve()


def test_list_defaults_are_not_shared_between_objects() -> None:
    first, second = AudioConfig(), AudioConfig()
    assert first.stereo_roles == second.stereo_roles
    assert first.stereo_roles is not second.stereo_roles


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[audoi]\nrate = 8000\n", "audoi", "unknown section"),
        ("[audio]\nsample_rate = 8000\n", "audio.sample_rate", "unknown key"),
        ("audio = 3\n", "audio", "must be a table"),
        ('[vad]\naggressiveness = "high"\n', "vad.aggressiveness", "must be int, got str 'high'"),
        ("[vad]\naggressiveness = 2.0\n", "vad.aggressiveness", "must be int, got float"),
        ("[vad]\naggressiveness = true\n", "vad.aggressiveness", "must be int, got bool"),
        ("[asr]\npartials = 1\n", "asr.partials", "must be bool, got int"),
        ("[loudness]\nmargin_db = true\n", "loudness.margin_db", "must be float, got bool"),
        ("[loudness]\nmargin_db = [10]\n", "loudness.margin_db", "must be float, got list"),
        ("[asr]\nmodel = 3\n", "asr.model", "must be str, got int"),
        ("[vad]\naggressiveness = 4\n", "vad.aggressiveness", "must be between 0 and 3, got 4"),
        ("[vad]\naggressiveness = -1\n", "vad.aggressiveness", "must be between 0 and 3, got -1"),
        (
            "[loudness]\nceiling_dbfs = 3.0\n",
            "loudness.ceiling_dbfs",
            "must be between -60.0 and 0.0, got 3.0",
        ),
        ("[vad]\nstart_ratio = 0.0\n", "vad.start_ratio", "must be between 0.05 and 1.0"),
        ("[audio]\nrate = 44100\n", "audio.rate", "must be one of 8000, 16000, 32000, 48000, got 44100"),
        ('[audio]\nrate = "16000"\n', "audio.rate", "must be one of"),
        ("[audio]\nframe_ms = 25\n", "audio.frame_ms", "must be one of 10, 20, 30, got 25"),
        ('[language]\nmode = "de"\n', "language.mode", "must be one of 'auto', 'en', 'fr', got 'de'"),
        ('[audio]\nmono_role = "caller"\n', "audio.mono_role", "must be one of 'customer', 'agent'"),
        ('[audio]\nstereo_roles = "customer"\n', "audio.stereo_roles", "must be a list, got str"),
        ('[audio]\nstereo_roles = ["customer", "caller"]\n', "audio.stereo_roles[1]", "got 'caller'"),
        ('[audio]\nstereo_roles = [1, "agent"]\n', "audio.stereo_roles[0]", "got 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    error = load_error(tmp_path, text)
    assert error.key == key
    assert problem in error.problem
    assert f": {key}: " in str(error), "the one-line message carries the key"


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[vad]\nagressiveness = 2\n")
    assert "aggressiveness" in error.problem


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[vad]\naggressiveness = = 2\n")
    assert error.key == ""
    assert "not valid TOML" in error.problem and "line 2" in error.problem


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_config(missing)
    assert caught.value.source == str(missing)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


def test_with_overrides_validates_like_a_file() -> None:
    config = Config().with_overrides(vad={"aggressiveness": 3}, audio={"rate": 8000})
    assert config.vad.aggressiveness == 3 and config.audio.rate == 8000
    assert config.vad.padding_ms == Config().vad.padding_ms
    with pytest.raises(ConfigError) as caught:
        Config().with_overrides(vad={"aggressiveness": 9})
    assert caught.value.key == "vad.aggressiveness"
    with pytest.raises(ConfigError) as caught:
        Config().with_overrides(vad={"agressiveness": 1})
    assert caught.value.key == "vad.agressiveness"


# ---------------------------------------------------------------------------
# Config.path


def test_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = load_config(write(tmp_path / "conf", ""))
    assert config.path("lexicon_en.toml") == tmp_path.resolve() / "conf" / "lexicon_en.toml"
    assert config.path("../models") == tmp_path.resolve() / "models"
    assert config.path("/srv/models") == Path("/srv/models")
    assert config.path("~/x.sqlite3") == Path.home() / "x.sqlite3"


def test_default_config_paths_point_into_the_shipped_folder() -> None:
    assert Config().path("lexicon_en.toml") == DEFAULT_CONFIG_FILE.parent / "lexicon_en.toml"


# ---------------------------------------------------------------------------
# The shipped file and the dataclass defaults stay in step


def keys_by_line(path: Path) -> dict[str, dict[str, int]]:
    """Each section's keys in a config file with their line numbers (0-based)."""
    keys: dict[str, dict[str, int]] = {}
    section = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if header := re.fullmatch(r"\[([\w.]+)\]\s*", line):
            section = header[1]
            keys.setdefault(section, {})
        elif (key := re.match(r"(\w+)\s*=", line)) and section:
            keys[section][key[1]] = number
    return keys


def check_holds_every_default(path: Path) -> None:
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    for section in SECTIONS:
        in_file: dict[str, object] = document
        for part in section.split("."):
            assert part in in_file, f"{path}: section [{section}] missing"
            in_file = in_file[part]  # type: ignore[assignment]
        declared = section_keys(section)
        own = {k for k, v in in_file.items() if not (isinstance(v, dict) and f"{section}.{k}" in SECTIONS)}
        missing, unknown = set(declared) - own, own - set(declared)
        assert not missing and not unknown, (
            f"[{section}] keys missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
        for key in declared:
            assert in_file[key] == section_default(section, key), f"{section}.{key}: file and code disagree"
    unknown_sections = {k for k in document if k not in SECTIONS}
    assert not unknown_sections, f"{path}: unknown sections {sorted(unknown_sections)}"
    assert load_config(path) == Config(base_dir=path.resolve().parent)


def check_comments_every_key(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    keys = keys_by_line(path)
    for section in SECTIONS:
        assert section in keys, f"[{section}] missing from {path}"
        for key in section_keys(section):
            assert key in keys[section], f"{section}.{key} missing from {path}"
            above = lines[keys[section][key] - 1].strip()
            assert above.startswith("#"), f"{section}.{key}: no comment line above it in {path}"


def test_shipped_file_holds_every_default() -> None:
    check_holds_every_default(DEFAULT_CONFIG_FILE)


def test_shipped_file_comments_every_key() -> None:
    check_comments_every_key(DEFAULT_CONFIG_FILE)


# ---------------------------------------------------------------- where the config is found


def test_config_is_found_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from callguard.core.config import DEFAULT_CONFIG_FILE, find_config

    monkeypatch.delenv("CALLGUARD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    if not Path("/etc/callguard/callguard.toml").exists():
        assert find_config() == DEFAULT_CONFIG_FILE
    user = tmp_path / "xdg" / "callguard" / "callguard.toml"
    user.parent.mkdir(parents=True)
    user.write_text("")
    if not Path("/etc/callguard/callguard.toml").exists():
        assert find_config() == user
    monkeypatch.setenv("CALLGUARD_CONFIG", str(tmp_path / "env.toml"))
    assert find_config() == tmp_path / "env.toml"
    assert find_config(tmp_path / "given.toml") == tmp_path / "given.toml"


def test_config_init_writes_an_editable_copy_that_loads(tmp_path: Path) -> None:
    from callguard.core.config import init_config

    written = init_config(tmp_path / "mine")
    names = {p.relative_to(tmp_path / "mine").as_posix() for p in written}
    assert {"callguard.toml", "lexicon_en.toml", "prompts_fr.toml", "labelled/README.md"} <= names
    config = load_config(tmp_path / "mine" / "callguard.toml")
    assert config.path(config.detector.lexicon_en) == (tmp_path / "mine" / "lexicon_en.toml").resolve()
    with pytest.raises(ConfigError, match="already exists"):
        init_config(tmp_path / "mine")
    system = init_config(tmp_path / "etc", system=True)
    text = (tmp_path / "etc" / "callguard.toml").read_text()
    assert 'models_dir = "/var/lib/callguard/models"' in text and "/var/lib/callguard/incidents" in text
    assert load_config(system[0].parent / "callguard.toml").asr.models_dir == "/var/lib/callguard/models"
