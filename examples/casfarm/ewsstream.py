"""EWS streaming notifications on the wire: one long GetStreamingEvents answer.

Theory of operation: `EwsStore` is the farm's mailbox with a trio event that
wakes every open stream when a request changes it. `stream_events` answers an
accepted GetStreamingEvents (`casfarm.ews.Stream`) as Exchange does: a chunked
200 that stays open for the ConnectionTimeout, each chunk a whole SOAP
envelope; events are sent as soon as they are pending, a `ConnectionStatus OK`
keep-alive after every quiet `keepalive` seconds, and a last
`ConnectionStatus Closed` when the time is up. A balancer in front must let
this request live for minutes and not count it as a slow answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from casfarm import ewsxml as x
from casfarm.ews import XML, Stream
from casfarm.http import HttpExchange
from casfarm.mailbox import CHANGE_KEY, Event, Mailbox, folder_id


@dataclass
class EwsStore:
    """The farm's mailbox, shared by every server, and the wake-up of open streams."""

    mailbox: Mailbox
    _changed: trio.Event = field(default_factory=trio.Event, repr=False)

    def changed(self) -> None:
        """Wake every open stream (after a request changed the mailbox)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self) -> None:
        """Until the next change."""
        await self._changed.wait()


def _event_xml(event: Event) -> str:
    return (
        f"<t:{event.kind}>{x.element('t:TimeStamp', event.timestamp)}"
        f'<t:ItemId Id="{event.item_id}" ChangeKey="{CHANGE_KEY}"/>'
        f'<t:ParentFolderId Id="{folder_id(event.folder)}" ChangeKey="{CHANGE_KEY}"/>'
        f"</t:{event.kind}>"
    )


def notification(status: str, events: Sequence[tuple[str, Sequence[Event]]] = ()) -> bytes:
    """One envelope of a streaming answer: events per subscription, then the ConnectionStatus."""
    notes = "".join(
        f"<m:Notification>{x.element('t:SubscriptionId', sub)}"
        f"{''.join(_event_xml(e) for e in evs)}</m:Notification>"
        for sub, evs in events
    )
    content = (f"<m:Notifications>{notes}</m:Notifications>" if notes else "") + x.element(
        "m:ConnectionStatus", status
    )
    return x.response("GetStreamingEvents", [x.success("GetStreamingEvents", content)])


def _pending(mailbox: Mailbox, subscriptions: Sequence[str]) -> list[tuple[str, list[Event]]]:
    taken = [(sub, mailbox.take_events(sub)) for sub in subscriptions]
    return [(sub, events) for sub, events in taken if events]


async def stream_events(
    ex: HttpExchange, store: EwsStore, stream: Stream, keepalive: float
) -> None:
    """Serve one GetStreamingEvents for `stream.minutes`, then close it as Exchange does."""
    await ex.start(200, [XML, ("Transfer-Encoding", "chunked")])
    deadline = trio.current_time() + stream.minutes * 60
    quiet_since = trio.current_time()
    while trio.current_time() < deadline:
        events = _pending(store.mailbox, stream.subscriptions)
        now = trio.current_time()
        if events:
            await ex.send(notification("OK", events))
            quiet_since = now
        elif now - quiet_since >= keepalive:
            await ex.send(notification("OK"))
            quiet_since = now
        wake = min(deadline, quiet_since + keepalive)
        with trio.move_on_at(wake):
            await store.wait()
    await ex.send(notification("Closed"))
    await ex.end()
