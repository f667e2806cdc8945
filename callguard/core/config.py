"""The one configuration object: typed sections loaded from TOML and validated.

Every section is a frozen dataclass; each field is declared with `setting()`,
which carries its range or choices. `load_config` walks the TOML document
against these classes and names the exact key of any unknown key, wrong type
or out-of-range value. The defaults here mirror callguard/defaults/callguard.toml
(package data, with the lexicons and prompt catalogues beside it), of which
`callguard config init` writes the copy IT edits; a test keeps the two in step.

Which file a command reads (`find_config`): `--config`, else `$CALLGUARD_CONFIG`, else
/etc/callguard/callguard.toml, else ~/.config/callguard/callguard.toml, else the packaged
defaults. `load_config()` itself, with no path, is always the packaged defaults.
"""

from __future__ import annotations

import os
import shutil
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from callguard.core.errors import ConfigError

# Package data, read where the package is installed (a wheel or a checkout alike).
PACKAGE_DATA = Path(str(resources.files("callguard")))
DEFAULT_CONFIG_DIR = PACKAGE_DATA / "defaults"
DEFAULT_CONFIG_FILE = DEFAULT_CONFIG_DIR / "callguard.toml"
PACKAGED_HEADS = PACKAGE_DATA / "data" / "heads"
CONFIG_ENV = "CALLGUARD_CONFIG"
SYSTEM_CONFIG_FILE = Path("/etc/callguard/callguard.toml")
SYSTEM_DATA_DIR = Path("/var/lib/callguard")


def user_config_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "callguard"


def find_config(explicit: str | Path | None = None) -> Path:
    """The config file a command reads: the first of --config, $CALLGUARD_CONFIG, the system's,
    the user's, that is given or exists; else the packaged defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in (SYSTEM_CONFIG_FILE, user_config_dir() / "callguard.toml"):
        if candidate.is_file():
            return candidate
    return DEFAULT_CONFIG_FILE


def init_config(folder: Path, *, system: bool = False, force: bool = False) -> list[Path]:
    """Write an editable copy of the packaged defaults (config, lexicons, prompts, the site's
    labelled-lines folder) into `folder`; refuse to overwrite unless `force`. A system copy
    keeps its models and incident store under /var/lib/callguard."""
    sources = sorted(p for p in DEFAULT_CONFIG_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    targets = [folder / p.relative_to(DEFAULT_CONFIG_DIR) for p in sources]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise ConfigError(existing[0], "", "already exists (pass --force to overwrite the whole copy)")
    for source, target in zip(sources, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    if system:
        main = folder / "callguard.toml"
        text = main.read_text(encoding="utf-8")
        text = text.replace(
            'models_dir = "~/.local/share/callguard/models"', f'models_dir = "{SYSTEM_DATA_DIR}/models"'
        )
        text = text.replace(
            'path = "~/.local/share/callguard/incidents.sqlite3"',
            f'path = "{SYSTEM_DATA_DIR}/incidents.sqlite3"',
        )
        main.write_text(text, encoding="utf-8")
    return targets


def setting(default: Any, *, lo: float | None = None, hi: float | None = None) -> Any:
    """A config field with an optional inclusive range [lo, hi]."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"lo": lo, "hi": hi})
    return field(default=default, metadata={"lo": lo, "hi": hi})


@dataclass(frozen=True)
class AudioConfig:
    rate: Literal[8000, 16000, 32000, 48000] = setting(16000)
    frame_ms: Literal[10, 20, 30] = setting(30)
    mono_role: Literal["customer", "agent"] = setting("customer")
    stereo_roles: list[Literal["customer", "agent"]] = setting(["customer", "agent"])


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = setting(2, lo=0, hi=3)
    padding_ms: int = setting(300, lo=30, hi=2000)
    start_ratio: float = setting(0.6, lo=0.05, hi=1.0)
    end_ratio: float = setting(0.9, lo=0.05, hi=1.0)


@dataclass(frozen=True)
class GateConfig:
    enabled: bool = setting(True)
    hold_ms: int = setting(1500, lo=90, hi=10000)
    window_ms: int = setting(1000, lo=300, hi=5000)
    music_flux: float = setting(6.0, lo=0.0, hi=20.0)
    music_swing_db: float = setting(4.0, lo=0.0, hi=30.0)
    music_shape_flux: float = setting(3.8, lo=0.0, hi=20.0)
    release_flux: float = setting(15.0, lo=0.0, hi=20.0)
    release_db: float = setting(15.0, lo=1.0, hi=60.0)
    floor_ms: int = setting(3000, lo=1000, hi=30000)
    noise_margin_db: float = setting(6.0, lo=1.0, hi=40.0)
    tonality: float = setting(0.9, lo=0.5, hi=1.0)
    tone_ms: int = setting(90, lo=30, hi=2000)
    tone_flux: float = setting(3.0, lo=0.0, hi=20.0)
    quiet_dbfs: float = setting(-55.0, lo=-100.0, hi=0.0)
    merge_gap_ms: int = setting(1000, lo=0, hi=60000)
    music_memory_s: float = setting(30.0, lo=0.0, hi=600.0)
    voice_probability: float = setting(0.5, lo=0.0, hi=1.0)
    voice_check_ms: int = setting(240, lo=30, hi=5000)


@dataclass(frozen=True)
class LoudnessConfig:
    floor_dbfs: float = setting(-55.0, lo=-120.0, hi=0.0)
    ceiling_dbfs: float = setting(-3.0, lo=-60.0, hi=0.0)
    margin_db: float = setting(10.0, lo=1.0, hi=40.0)
    min_shout_s: float = setting(0.6, lo=0.03, hi=10.0)
    baseline_speech_s: float = setting(3.0, lo=0.3, hi=120.0)
    smoothing_ms: int = setting(300, lo=10, hi=3000)
    cooldown_s: float = setting(5.0, lo=0.0, hi=600.0)


@dataclass(frozen=True)
class AsrConfig:
    model: str = setting("")
    model_en: str = setting("vosk-model-small-en-us-0.15")
    model_fr: str = setting("vosk-model-small-fr-0.22")
    models_dir: str = setting("~/.local/share/callguard/models")
    partials: bool = setting(True)
    max_utterance_s: float = setting(15.0, lo=1.0, hi=60.0)
    renew_after_s: float = setting(60.0, lo=10.0, hi=3600.0)


@dataclass(frozen=True)
class LanguageConfig:
    mode: Literal["auto", "en", "fr"] = setting("auto")
    fallback: Literal["en", "fr"] = setting("en")
    auto_min_words: int = setting(5, lo=1, hi=500)
    auto_margin: float = setting(3.0, lo=1.0, hi=100.0)


@dataclass(frozen=True)
class DetectorConfig:
    lexicon_en: str = setting("lexicon_en.toml")
    lexicon_fr: str = setting("lexicon_fr.toml")
    stable_partials: int = setting(2, lo=1, hi=10)
    semantic: bool = setting(True)
    heads: str = setting("")  # a folder of trained heads; empty: the ones shipped with callguard
    site_corpus: str = setting("labelled")
    profanity_sensitivity: float = setting(0.3, lo=0.0, hi=1.0)
    insult_sensitivity: float = setting(0.35, lo=0.0, hi=1.0)
    threat_sensitivity: float = setting(0.4, lo=0.0, hi=1.0)
    screen_gate: float = setting(0.1, lo=0.0, hi=1.0)
    context_s: float = setting(15.0, lo=0.0, hi=120.0)
    partial_step_words: int = setting(3, lo=1, hi=50)
    agent_acts: bool = setting(True)
    agent_act_sensitivity: float = setting(0.5, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class PolicyConfig:
    prompts_en: str = setting("prompts_en.toml")
    prompts_fr: str = setting("prompts_fr.toml")
    # Counting window for the thresholds below; a calm step-down empties it.
    window_s: float = setting(90.0, lo=5.0, hi=3600.0)
    tense_shouts: int = setting(2, lo=1, hi=20)
    tense_profanities: int = setting(1, lo=1, hi=20)
    abusive_insults: int = setting(1, lo=1, hi=20)
    abusive_profanities: int = setting(3, lo=1, hi=50)
    outburst_s: float = setting(5.0, lo=0.0, hi=60.0)
    limits_delay_s: float = setting(6.0, lo=0.0, hi=120.0)
    assume_limits_after_s: float = setting(10.0, lo=0.0, hi=3600.0)
    transfer_after_limits_s: float = setting(2.0, lo=0.0, hi=600.0)
    release_after_transfer_s: float = setting(15.0, lo=0.0, hi=600.0)
    threat_release_count: int = setting(2, lo=1, hi=20)
    threat_alert_gap_s: float = setting(10.0, lo=0.0, hi=600.0)
    calm_step_down_s: float = setting(45.0, lo=5.0, hi=3600.0)
    prompt_cooldown_s: float = setting(60.0, lo=0.0, hi=3600.0)
    min_prompt_gap_s: float = setting(4.0, lo=0.0, hi=600.0)
    turn_tip_delay_s: float = setting(1.0, lo=0.0, hi=10.0)
    # The agent's loudness tracker uses this margin over their baseline instead of [loudness].margin_db.
    agent_margin_db: float = setting(8.0, lo=1.0, hi=40.0)
    agent_max_wpm: float = setting(200.0, lo=60.0, hi=600.0)
    agent_wpm_min_words: int = setting(6, lo=1, hi=100)


@dataclass(frozen=True)
class StoreConfig:
    path: str = setting("~/.local/share/callguard/incidents.sqlite3")
    redact: bool = setting(True)  # card numbers, phone numbers, e-mail addresses in stored transcripts
    transcripts: bool = setting(True)  # store final transcripts at all


@dataclass(frozen=True)
class DaemonConfig:
    host: str = setting("127.0.0.1")
    port: int = setting(8765, lo=1, hi=65535)
    token: str = setting("")
    customer_device: str = setting("")
    agent_device: str = setting("")
    stereo_device: str = setting("")
    block_ms: int = setting(200, lo=10, hi=500)
    queue_blocks: int = setting(200, lo=4, hi=100000)
    stall_s: float = setting(2.0, lo=0.5, hi=60.0)
    auto_calls: bool = setting(True)
    auto_call_speech_s: float = setting(2.0, lo=0.1, hi=60.0)
    auto_call_end_silence_s: float = setting(20.0, lo=1.0, hi=3600.0)
    reload_poll_s: float = setting(2.0, lo=0.0, hi=3600.0)
    timeline_length: int = setting(30, lo=1, hi=1000)
    notify_threats: bool = setting(False)
    degrade: bool = setting(True)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info")


@dataclass(frozen=True)
class FloorConfig:
    url: str = setting("")  # "" = no floor: nothing leaves the workstation
    credential_file: str = setting("floor-credential")
    ca_file: str = setting("")
    share: Literal["none", "flagged", "all"] = setting("flagged")
    alert_timeout_s: float = setting(5.0, lo=1.0, hi=300.0)
    retry_max_s: float = setting(30.0, lo=1.0, hi=3600.0)
    poll_s: float = setting(2.0, lo=0.1, hi=600.0)


@dataclass(frozen=True)
class QaConfig:
    cluster: str = setting("")  # a Dask scheduler (tcp://HOST:8786) for replay/evaluate; "" = local pool
    connect_timeout_s: float = setting(30.0, lo=1.0, hi=3600.0)


@dataclass(frozen=True)
class SiprecConfig:
    enabled: bool = setting(False)
    host: str = setting("127.0.0.1")  # SIP over UDP and TCP on the same port
    port: int = setting(5060, lo=1, hi=65535)
    rtp_ports: list[int] = setting([40000, 40999])  # first and last UDP port for the calls' RTP
    # Which stream is the agent's when the metadata cannot say.
    agent_side: Literal["second", "first"] = setting("second")
    agent_aor_pattern: str = setting("")  # a regex: a participant whose AOR matches is the agent
    allowed_peers: list[str] = setting([])  # source addresses (or CIDR) allowed to record; [] = loopback only
    jitter_ms: int = setting(60, lo=0, hi=1000)  # how long the jitter buffer waits for a late packet
    rtp_timeout_s: float = setting(30.0, lo=0.5, hi=3600.0)  # no RTP on any of a call's streams: end it
    max_dialogs: int = setting(256, lo=1, hi=100000)  # SIP dialogs at once (set up or answered); more: 503


@dataclass(frozen=True)
class TwilioConfig:
    enabled: bool = setting(False)
    host: str = setting("127.0.0.1")
    port: int = setting(8081, lo=1, hi=65535)
    path: str = setting("/twilio")
    auth_token_file: str = setting("twilio-auth-token")  # the account's auth token: signs the upgrade request
    public_url: str = setting("")  # the wss:// URL as Twilio sees it (behind a proxy); "" = from the request
    idle_timeout_s: float = setting(10.0, lo=1.0, hi=3600.0)  # no message this long: the call ends "timeout"
    max_connections: int = setting(64, lo=1, hi=100000)  # streams open at once; the next upgrade gets 503


@dataclass(frozen=True)
class AudioHookConfig:
    enabled: bool = setting(False)
    host: str = setting("127.0.0.1")
    port: int = setting(8082, lo=1, hi=65535)
    path: str = setting("/audiohook")
    keys_file: str = setting("audiohook-keys.toml")  # API key id -> client secret (base64), one per org
    idle_timeout_s: float = setting(10.0, lo=1.0, hi=3600.0)  # no message (audio, ping) this long: "timeout"
    max_connections: int = setting(64, lo=1, hi=100000)  # sessions open at once; the next upgrade gets 503


@dataclass(frozen=True)
class AudioSocketConfig:
    enabled: bool = setting(False)
    host: str = setting("127.0.0.1")
    port: int = setting(8083, lo=1, hi=65535)
    # One direction per connection: a UUID's first connection is this speaker, its second the other.
    first_role: Literal["customer", "agent"] = setting("customer")
    read_timeout_s: float = setting(5.0, lo=0.5, hi=600.0)  # no whole frame within it: ends "timeout"
    max_connections: int = setting(64, lo=1, hi=100000)  # held at once; beyond it a new one is closed at once


@dataclass(frozen=True)
class ServeConfig:
    host: str = setting("127.0.0.1")  # the panel and the API of `callguard serve`
    port: int = setting(8766, lo=1, hi=65535)
    max_calls: int = setting(8, lo=1, hi=10000)  # calls run at once; the next is refused, never queued
    default_agent: str = setting("")  # the agent id of a stream whose metadata names none
    agents_file: str = setting("agents.toml")  # agent id -> the SHA-256 of that agent's panel token
    tls_cert: str = setting("")
    tls_key: str = setting("")
    token: str = setting("")  # the admin/CTI token; "" = generated once, kept in serve-token beside the store
    call_queue_s: float = setting(30.0, lo=1.0, hi=600.0)  # audio a call may hold waiting
    cti_hold_s: float = setting(600.0, lo=1.0, hi=86400.0)  # how long a CTI call start waits for its stream
    siprec: SiprecConfig = field(default_factory=SiprecConfig)
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    audiohook: AudioHookConfig = field(default_factory=AudioHookConfig)
    audiosocket: AudioSocketConfig = field(default_factory=AudioSocketConfig)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    floor: FloorConfig = field(default_factory=FloorConfig)
    qa: QaConfig = field(default_factory=QaConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    # The folder that relative paths (lexicons, prompts, models) are read from.
    base_dir: Path = DEFAULT_CONFIG_DIR

    def path(self, relative: str) -> Path:
        """Resolve a path setting against the folder of the config file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def heads_dir(self) -> Path:
        """The folder of semantic heads: the configured one, else the one shipped with callguard."""
        return self.path(self.detector.heads) if self.detector.heads else PACKAGED_HEADS

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys replaced, validated as a file would be."""
        updated = {}
        for name, values in sections.items():
            current = getattr(self, name)
            merged = {f.name: getattr(current, f.name) for f in fields(current)} | values
            updated[name] = _build(type(current), merged, name, "<overrides>")
        return replace(self, **updated)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse one TOML file (config, lexicon, catalogue); one-line errors name the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"is not valid TOML ({exc})") from None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file; with no path, the shipped defaults."""
    source = Path(path) if path else DEFAULT_CONFIG_FILE
    document = read_toml(source, "file")
    sections = {f.name: f for f in fields(Config) if f.name != "base_dir"}
    built: dict[str, Any] = {}
    for name, value in document.items():
        if name not in sections:
            raise ConfigError(source, name, f"unknown section (expected one of {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(source, name, "must be a table ([section])")
        built[name] = _build(_section_type(sections[name]), value, name, source)
    return Config(**built, base_dir=source.resolve().parent)


def _section_type(f: Any) -> type:
    hints = typing.get_type_hints(Config)
    return hints[f.name]


def _build(cls: type, values: dict[str, Any], prefix: str, source: str | Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}"
        if key not in known:
            raise ConfigError(source, dotted, f"unknown key (expected one of {', '.join(known)})")
        kwargs[key] = _check(hints[key], value, known[key].metadata, dotted, source)
    return cls(**kwargs)


def _check(hint: Any, value: Any, meta: Any, key: str, source: str | Path) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args or type(value) is not type(args[0]):
            raise ConfigError(source, key, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(source, key, f"must be a list, got {type(value).__name__}")
        return [_check(args[0], item, {}, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check(arg, value, meta, key, source)
            except ConfigError:
                continue
        raise ConfigError(source, key, f"has the wrong type {type(value).__name__}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is type(None) and value is None:
        return value
    if isinstance(hint, type) and is_dataclass(hint):
        return _build(hint, value, key, source)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(source, key, f"must be {hint.__name__}, got {type(value).__name__} {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(source, key, f"must be between {lo} and {hi}, got {value!r}")
    return value
