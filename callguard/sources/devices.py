"""Live capture from sound devices (sounddevice / PortAudio), and `callguard devices`.

The real-time contract: the stream callback only copies the block into a
bounded queue with `put_nowait` and counts what it could not put; it never
logs, blocks or raises (an exception there would stop the stream silently).
Resampling, channel splitting and everything else happen on the daemon's
worker, off the audio thread.

PortAudio has no unplug callback and can hang rather than fail when a USB
headset is power-cycled, so a watchdog judges each stream by the age of its
last callback. A lost device is closed (on a helper thread, since closing a
hung stream can hang too) and reopened with back-off, re-resolved by name:
PortAudio's device list is frozen until it is re-initialised, which closes
every stream and renumbers devices, so the other streams are reopened too.
The time a device was lost comes back to the worker as silence, so its
speakers' clocks (audio time) stay with the others' and the wall clock.

sounddevice is imported lazily: replay and the tests of other modules must
work on machines without PortAudio.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from callguard.core.config import Config
from callguard.core.errors import AudioError
from callguard.core.events import AudioBlock, Role

log = logging.getLogger("callguard.sources.devices")

BLOCK_S = 0.2  # seconds per callback unless configured ([daemon] block_ms)
STALL_S = 2.0  # no callback for this long on a started stream: the device is lost or hung
GAP_FILL_MIN_S = 0.2  # a reopened device's gap shorter than this is jitter, not lost audio
GAP_FILL_MAX_S = 600.0  # at most this much silence stands in for a lost device's gap: the worker feeds it in
# one go (120 s took 0.05 CPU s), and a longer absence is not worth a stall (the clock then stays behind)
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_samplerate: float


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """One device to open, and the role of each of its channels (one role: downmixed mono)."""

    device: str  # a name or part of one; "" = the default input device
    roles: tuple[Role, ...]
    setting: str  # the config key it came from, for error messages

    @property
    def channels(self) -> int:
        return len(self.roles)


@dataclass(frozen=True, slots=True)
class CapturedBlock:
    """What the callback queues: a copy of the block and where it came from."""

    source: int  # index of the DeviceCapture in the CaptureSet
    generation: int  # bumps at each reopen, so the worker resets its resampler
    rate: int
    data: np.ndarray  # int16, (frames, channels)
    at: float = 0.0  # time.monotonic() of the callback (its last sample was just captured)


class InputStream(Protocol):
    active: bool

    def start(self) -> None: ...
    def close(self) -> None: ...


class AudioBackend(Protocol):
    """The part of PortAudio that capture needs; the tests replace it only to simulate an unplug."""

    def input_devices(self) -> list[DeviceInfo]: ...
    def supports(self, device: int, rate: int, channels: int) -> bool: ...
    def open_input(
        self, device: int, rate: int, channels: int, blocksize: int, callback: Callable[..., None]
    ) -> InputStream: ...
    def reinitialize(self) -> None: ...


class PortAudioBackend:
    """sounddevice, imported on first use."""

    def __init__(self) -> None:
        try:
            import sounddevice
        except OSError as exc:  # the PortAudio library itself is missing
            raise AudioError("PortAudio", f"cannot load the PortAudio library ({exc})") from None
        self.sd = sounddevice

    def input_devices(self) -> list[DeviceInfo]:
        hostapis = self.sd.query_hostapis()
        return [
            DeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(hostapis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                default_samplerate=float(d["default_samplerate"]),
            )
            for d in self.sd.query_devices()
            if d["max_input_channels"] > 0
        ]

    def supports(self, device: int, rate: int, channels: int) -> bool:
        try:
            self.sd.check_input_settings(device=device, samplerate=rate, channels=channels, dtype="int16")
            return True
        except Exception:
            return False

    def open_input(
        self, device: int, rate: int, channels: int, blocksize: int, callback: Callable[..., None]
    ) -> InputStream:
        stream = self.sd.InputStream(
            device=device,
            samplerate=rate,
            channels=channels,
            dtype="int16",
            blocksize=blocksize,
            callback=callback,
        )
        return stream  # type: ignore[no-any-return]

    def reinitialize(self) -> None:
        # The only way to see devices plugged in after start; closes every open stream.
        self.sd._terminate()
        self.sd._initialize()


def specs_from_config(config: Config) -> list[CaptureSpec]:
    """Which devices to open: one stereo device, or a device per role, or the default device."""
    d, audio = config.daemon, config.audio
    if d.stereo_device:
        return [CaptureSpec(d.stereo_device, tuple(audio.stereo_roles), "daemon.stereo_device")]
    specs = []
    if d.customer_device:
        specs.append(CaptureSpec(d.customer_device, ("customer",), "daemon.customer_device"))
    if d.agent_device:
        specs.append(CaptureSpec(d.agent_device, ("agent",), "daemon.agent_device"))
    return specs or [CaptureSpec("", (audio.mono_role,), "daemon.customer_device")]


def resolve_device(devices: Sequence[DeviceInfo], wanted: str) -> DeviceInfo | None:
    """A device by exact name, else by case-insensitive part of its name ("" = first default-like)."""
    if not wanted:
        for name in ("default", "pulse", "pipewire"):
            found = next((d for d in devices if d.name == name), None)
            if found:
                return found
        return devices[0] if devices else None
    exact = [d for d in devices if d.name == wanted]
    if exact:
        return exact[0]
    partial = [d for d in devices if wanted.lower() in d.name.lower()]
    return partial[0] if partial else None


@dataclass
class DeviceCapture:
    """One input stream and its health counters. Counters are written by the callback only."""

    source: int
    spec: CaptureSpec
    target_rate: int
    blocks: queue.Queue[CapturedBlock]
    state: str = "closed"  # closed, running, lost
    device_name: str = ""
    rate: int = 0
    opened_channels: int = 0
    generation: int = 0
    last_callback: float = 0.0
    started_at: float = 0.0
    callbacks: int = 0
    overflows: int = 0  # PortAudio said input overflowed (the OS dropped audio)
    dropped: int = 0  # our queue was full: the worker is behind
    callback_errors: int = 0
    reconnects: int = 0
    error: str = ""
    retry_at: float = 0.0
    failures: int = 0
    stream: InputStream | None = None
    _resampler: Any = None
    _resampler_generation: int = -1
    _split_generation: int = -1  # generation and callback time of the last block split
    _split_at: float = 0.0
    _heard: dict[Role, int] = field(default_factory=dict)  # samples handed on per role: their audio time

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Audio thread: no logging, no locks, no exceptions escape (they would stop the stream silently).
        try:
            self.last_callback = time.monotonic()
            self.callbacks += 1
            if status:
                self.overflows += 1
            self.blocks.put_nowait(
                CapturedBlock(self.source, self.generation, self.rate, indata.copy(), self.last_callback)
            )
        except queue.Full:
            self.dropped += 1
        except Exception:
            self.callback_errors += 1

    def split(self, block: CapturedBlock) -> list[AudioBlock]:
        """Worker side: one mono int16 block per role, at the pipeline rate."""
        data = block.data
        if self.spec.channels == 1 and data.shape[1] > 1:
            # A mono role on a device that only opened in stereo: mix down.
            data = data.astype(np.int32).mean(axis=1, keepdims=True).astype(np.int16)
        out = []
        for channel, role in enumerate(self.spec.roles):
            mono = np.ascontiguousarray(data[:, min(channel, data.shape[1] - 1)])
            out.append((role, mono))
        gap = self._lost_samples(block)
        if block.rate != self.target_rate:
            if self._resampler_generation != block.generation:
                import soxr

                self._resampler = [
                    soxr.ResampleStream(block.rate, self.target_rate, 1, dtype="int16")
                    for _ in self.spec.roles
                ]
                self._resampler_generation = block.generation
            out = [(role, self._resampler[i].resample_chunk(pcm)) for i, (role, pcm) in enumerate(out)]
        if gap:
            silence = np.zeros(gap, dtype=np.int16)
            out = [(role, np.concatenate((silence, pcm))) for role, pcm in out]
        blocks = []
        for role, pcm in out:
            heard = self._heard.get(role, 0)
            blocks.append(AudioBlock(role, pcm, self.target_rate, heard / self.target_rate))
            self._heard[role] = heard + len(pcm)
        return blocks

    def _lost_samples(self, block: CapturedBlock) -> int:
        """Samples (at the pipeline rate) of silence standing in for the time a reopened device was lost."""
        reopened = self._split_generation >= 0 and block.generation != self._split_generation
        gap_s = block.at - self._split_at - len(block.data) / block.rate
        self._split_generation, self._split_at = block.generation, block.at
        if not reopened or gap_s < GAP_FILL_MIN_S:
            return 0
        return round(min(gap_s, GAP_FILL_MAX_S) * self.target_rate)

    def health(self, now: float) -> dict[str, Any]:
        return {
            "roles": list(self.spec.roles),
            "role": "+".join(self.spec.roles),
            "wanted": self.spec.device or "(default)",
            "device": self.device_name,
            "ok": self.state == "running" and now - self.last_callback < STALL_S,
            "state": self.state,
            "rate": self.rate,
            "last_block_age_s": round(now - self.last_callback, 3) if self.last_callback else None,
            "overflows": self.overflows,
            "dropped": self.dropped,
            "callback_errors": self.callback_errors,
            "reconnects": self.reconnects,
            "error": self.error,
        }


@dataclass
class CaptureSet:
    """Every configured device, with a watchdog that reopens lost ones."""

    specs: list[CaptureSpec]
    rate: int
    blocks: queue.Queue[CapturedBlock]
    backend_factory: Callable[[], AudioBackend] = PortAudioBackend
    stall_s: float = STALL_S
    backoff_s: tuple[float, ...] = BACKOFF_S
    block_s: float = BLOCK_S
    devices: list[DeviceCapture] = field(default_factory=list)
    _backend: AudioBackend | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.devices = [DeviceCapture(i, spec, self.rate, self.blocks) for i, spec in enumerate(self.specs)]

    def start(self) -> None:
        """Open every device; one that cannot open now is retried by the watchdog."""
        with self._lock:
            try:
                self._backend = self.backend_factory()
            except AudioError as exc:
                for device in self.devices:
                    self._mark_lost(device, str(exc), time.monotonic())
                return
            for device in self.devices:
                self._open(device)

    def stop(self) -> None:
        with self._lock:
            for device in self.devices:
                self._close(device)
                device.state = "closed"

    def split(self, block: CapturedBlock) -> list[AudioBlock]:
        return self.devices[block.source].split(block)

    def health(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [d.health(now) for d in self.devices]

    def watchdog(self) -> None:
        """Called about twice a second from the daemon's supervisor thread."""
        with self._lock:
            now = time.monotonic()
            for device in self.devices:
                if device.state == "running":
                    since = now - (device.last_callback or device.started_at)
                    stream_active = device.stream is not None and bool(getattr(device.stream, "active", True))
                    if since > self.stall_s or not stream_active:
                        reason = "stream stopped" if not stream_active else f"no audio for {since:.1f} s"
                        log.warning(
                            "capture device lost",
                            extra={"fields": {"device": device.device_name, "roles": device.spec.roles,
                                              "reason": reason}},
                        )  # fmt: skip
                        self._close(device)
                        self._mark_lost(device, reason, now)
            due = [d for d in self.devices if d.state == "lost" and now >= d.retry_at]
            if not due:
                return
            if self._backend is None:
                try:
                    self._backend = self.backend_factory()
                except AudioError as exc:
                    for device in due:
                        self._mark_lost(device, str(exc), now)
                    return
            available = self._backend.input_devices()
            stale = any(resolve_device(available, d.spec.device) is None or d.failures >= 2 for d in due)
            if stale:
                # The list is frozen since start (an unplugged device stays listed, a replugged one is
                # missing or stale): re-initialise PortAudio, unless a plain reopen has not been tried
                # yet. That closes every stream, so the ones that were fine are reopened as well.
                running = [d for d in self.devices if d.state == "running"]
                for device in running:
                    self._close(device)
                self._backend.reinitialize()
                due = due + running
            for device in due:
                device.reconnects += 1
                self._open(device)

    # --- internals (called with the lock held) ---------------------------------------------------

    def _open(self, device: DeviceCapture) -> None:
        assert self._backend is not None
        now = time.monotonic()
        spec = device.spec
        found = resolve_device(self._backend.input_devices(), spec.device)
        if found is None:
            self._mark_lost(device, f"{spec.setting} = {spec.device!r}: no such input device", now)
            return
        channels = spec.channels
        if channels > found.max_input_channels:
            self._mark_lost(
                device,
                f"{spec.setting} = {spec.device!r}: {found.name} has {found.max_input_channels} input "
                f"channel(s), {channels} needed (one per role {', '.join(spec.roles)})",
                now,
            )
            return
        if not self._backend.supports(found.index, self.rate, channels) and channels == 1:
            channels = min(2, found.max_input_channels)  # some ALSA hw devices only open in stereo
        rate = (
            self.rate
            if self._backend.supports(found.index, self.rate, channels)
            else int(found.default_samplerate)
        )
        device.generation += 1
        device.rate = rate
        device.opened_channels = channels
        device.device_name = found.name
        try:
            stream = self._backend.open_input(
                found.index, rate, channels, max(1, int(rate * self.block_s)), device.callback
            )
            device.stream = stream
            device.started_at = time.monotonic()
            device.last_callback = 0.0
            stream.start()
        except Exception as exc:
            self._close(device)
            self._mark_lost(device, f"{found.name}: cannot open at {rate} Hz, {channels} ch ({exc})", now)
            return
        device.state = "running"
        device.error = ""
        device.failures = 0
        log.info(
            "capture device opened",
            extra={"fields": {"device": found.name, "roles": spec.roles, "rate": rate, "channels": channels}},
        )

    def _mark_lost(self, device: DeviceCapture, reason: str, now: float) -> None:
        delay = self.backoff_s[min(device.failures, len(self.backoff_s) - 1)]
        if device.error != reason or device.state != "lost":
            log.warning(
                "capture device unavailable",
                extra={"fields": {"wanted": device.spec.device, "reason": reason, "retry_in_s": delay}},
            )
        device.state = "lost"
        device.error = reason
        device.failures += 1
        device.retry_at = now + delay

    def _close(self, device: DeviceCapture) -> None:
        stream, device.stream = device.stream, None
        if stream is None:
            return
        # Closing a stream on a hung ALSA device can hang: do it on a throwaway thread.
        closer = threading.Thread(target=_close_quietly, args=(stream,), name="capture-close", daemon=True)
        closer.start()
        closer.join(timeout=1.0)
        if closer.is_alive():
            log.warning("capture stream did not close within 1 s; abandoned", extra={"fields": {}})


def _close_quietly(stream: InputStream) -> None:
    try:
        stream.close()
    except Exception as exc:
        log.info("closing a lost stream failed", extra={"fields": {"error": str(exc)}})


def cmd_devices() -> int:
    """`callguard devices`: every input device with its channels and default rate."""
    try:
        backend = PortAudioBackend()
        devices = backend.input_devices()
    except AudioError as exc:
        print(f"callguard: {exc}")
        return 1
    if not devices:
        print("no input devices found (is PulseAudio/PipeWire running for this user? XDG_RUNTIME_DIR set?)")
        return 1
    print(f"{'#':>3}  {'channels':>8}  {'rate':>7}  {'host API':12}  name")
    for d in devices:
        rates = [r for r in (8000, 16000, 48000) if backend.supports(d.index, r, 1)]
        extra = f"  (opens mono at {', '.join(str(r) for r in rates)})" if rates else ""
        rate = f"{d.default_samplerate:>7.0f}"
        print(f"{d.index:>3}  {d.max_input_channels:>8}  {rate}  {d.hostapi:12}  {d.name}{extra}")
    print("\nSet daemon.customer_device / daemon.agent_device (or daemon.stereo_device)")
    print("to a device name or part of one.")
    return 0
