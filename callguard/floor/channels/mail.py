"""E-mail channel over SMTP (stdlib smtplib), STARTTLS and login optional.

    [channels.supervisors-mail]
    type = "email"
    host = "smtp.example.com"
    port = 25
    starttls = false            # true: STARTTLS before anything else, the server's certificate verified
    ca_file = ""                # optional: a site CA for STARTTLS
    username = ""               # optional login, only over STARTTLS
    password = ""
    from = "callguard-floor@example.com"
    to = ["north-supervisors@example.com"]
    subject_prefix = "[callguard]"
    timeout = 10
    include_words = true
    send_resolved = false       # e-mail only when an alert fires, not when it is acknowledged

smtplib blocks: each send runs in this channel's own threads, so a hanging mail server holds only
the e-mail channel's threads, never the event loop or another channel. The stdlib over aiosmtplib:
one dependency fewer, and alerts are rare enough that a thread per send costs nothing.
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage

from callguard.floor.alerts import Alert
from callguard.floor.channels.base import DeliveryError
from callguard.floor.channels.options import ChannelOptions
from callguard.floor.channels.render import headline, plain_text

_SEND_THREADS = 2


@dataclass(frozen=True)
class EmailChannel:
    name: str
    host: str
    port: int
    starttls: bool
    tls: ssl.SSLContext
    username: str
    password: str
    sender: str
    recipients: tuple[str, ...]
    subject_prefix: str
    timeout: float
    include_words: bool
    send_resolved: bool
    _threads: ThreadPoolExecutor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        threads = ThreadPoolExecutor(_SEND_THREADS, thread_name_prefix=f"smtp-{self.name}")
        object.__setattr__(self, "_threads", threads)

    @classmethod
    def from_options(cls, options: ChannelOptions) -> EmailChannel:
        starttls = options.boolean("starttls", False)
        username = options.optional_text("username")
        password = options.optional_text("password")
        if bool(username) != bool(password):
            raise options.invalid("password" if username else "username", "username and password go together")
        if username and not starttls:
            raise options.invalid("username", "a login sends a password: it needs starttls = true")
        sender = options.text("from")
        recipients = options.text_list("to")
        for key, address in [("from", sender), *(("to", recipient) for recipient in recipients)]:
            if not _is_address(address):
                raise options.error(key, "an e-mail address (name@domain)", address)
        return cls(
            name=options.name,
            host=options.text("host"),
            port=options.integer("port", 25, 1, 65535),
            starttls=starttls,
            tls=options.tls_context(),
            username=username,
            password=password,
            sender=sender,
            recipients=recipients,
            subject_prefix=options.optional_text("subject_prefix", "[callguard]"),
            timeout=options.seconds("timeout", 10.0),
            include_words=options.boolean("include_words", True),
            send_resolved=options.boolean("send_resolved", False),
        )

    def message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"{self.subject_prefix} {headline(alert)}".strip()
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = email.utils.format_datetime(alert.resolved_at or alert.at)
        message["Message-ID"] = email.utils.make_msgid("callguard-alert", self.sender.rpartition("@")[2])
        message["X-Callguard-Alert"] = f"{alert.id} {alert.state}"
        message.set_content(plain_text(alert, include_words=self.include_words))
        return message

    async def send(self, alert: Alert) -> None:
        message = self.message(alert)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._threads, self._send_blocking, message)

    def _send_blocking(self, message: EmailMessage) -> None:
        where = f"SMTP {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls)
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            raise DeliveryError(f"{where}: every recipient refused: {sorted(error.recipients)}") from None
        except smtplib.SMTPException as error:
            raise DeliveryError(f"{where}: {type(error).__name__}: {error}") from None
        except ssl.SSLError as error:
            raise DeliveryError(f"{where}: STARTTLS failed: {error.reason or error}") from None
        except OSError as error:
            raise DeliveryError(f"{where}: {type(error).__name__}: {error}") from None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._threads.shutdown, wait=True, cancel_futures=True)


def _is_address(address: str) -> bool:
    name, _, domain = address.rpartition("@")
    return bool(name) and "." in domain and not any(char.isspace() or char in '<>,"' for char in address)
