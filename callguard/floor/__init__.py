"""`callguard floor`: the central on-premises service that workstation daemons report to.

A separate application: it imports nothing of the workstation code; the two meet only in the wire format
of docs/floor-protocol.md. The store is PostgreSQL (callguard.floor.db, callguard.floor.store), the HTTPS
API and the wallboard are served by callguard.floor.app, alert channels (webhook, syslog, Alertmanager,
e-mail) are fed by callguard.floor.dispatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from callguard.floor.alerts import Alert


class AlertSink(Protocol):
    """Where the floor hands an alert for its channels: callguard.floor.dispatch.Dispatcher in service.

    `enqueue` is called inside the transaction that stores the alert's event (or its acknowledgement),
    with that transaction's connection: the alert is stored in PostgreSQL before any channel is tried,
    and one stored is sent even if the floor stops right after (the sink keeps its own outbox there).
    """

    async def enqueue(self, conn: AsyncConnection[Any], alert: Alert) -> object: ...
