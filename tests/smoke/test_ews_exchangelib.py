"""exchangelib against casfarm's EWS, directly and through caslb at L7 and at L4.

A real EWS client logs on with NTLM, resolves a name, lists the inbox, saves
and sends messages and finds them again, meets a SOAP fault as its own
exception, and receives the NewMailEvent of a message sent while its
GetStreamingEvents request is open: the long-lived EWS answer, which caslb
must neither cut nor hold back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import casfarm
import pytest
import trio
from exchangelib import Account, Mailbox, Message
from exchangelib.errors import (
    ErrorInvalidServerVersion,
    ErrorItemNotFound,
    ErrorNameResolutionNoResults,
)
from exchangelib.properties import ENTRY_ID, EWS_ID, AlternateId

from tests.ewsclient import ADDRESS, account, lab_adapter
from tests.smoke.test_app_l4 import l4_config
from tests.smoke.test_app_l7 import NAMESPACE, balancer, farm_config, wait_for

pytestmark = pytest.mark.smoke


@asynccontextmanager
async def ews_endpoint(farm: casfarm.Farm, mode: str) -> AsyncIterator[tuple[str, int]]:
    """Where exchangelib should go: a server itself, or a caslb frontend in `mode`."""
    if mode == "direct":
        cas1 = farm.server("cas1")
        with lab_adapter(farm.ca_path, cas1.fqdn):
            yield cas1.address()
        return
    config = farm_config(farm) if mode == "l7" else l4_config(farm, "l4")
    async with balancer(farm, config) as app:
        await wait_for(lambda: all(m.eligible for p in app.pools.values() for m in p.members))
        with lab_adapter(farm.ca_path, NAMESPACE):
            yield app.addresses["https"]


def _ews_requests(farm: casfarm.Farm) -> int:
    return sum(farm.counts(s.name).requests.get("ews", 0) for s in farm.servers)


@pytest.mark.parametrize("mode", ["direct", "l7", "l4"])
async def test_exchangelib_works_with_the_farms_mailbox(mode: str) -> None:
    async with casfarm.running(servers=2, auth=True) as farm, ews_endpoint(farm, mode) as where:

        def session() -> None:
            acc = account(*where)
            [alice] = acc.protocol.resolve_names(["ali"])
            assert alice.email_address == ADDRESS
            [nobody] = acc.protocol.resolve_names(["nobody"])  # ResponseClass="Error" in a 200
            assert isinstance(nobody, ErrorNameResolutionNoResults)
            assert acc.inbox.name == "Inbox" and acc.inbox.total_count == 0
            saved = Message(account=acc, folder=acc.inbox, subject="saved", body="kept")
            saved.save()
            me = [Mailbox(email_address=ADDRESS)]
            Message(account=acc, folder=acc.sent, subject="sent", body="hi", to_recipients=me
                    ).send_and_save()  # fmt: skip
            inbox = {m.subject: m for m in acc.inbox.all()}
            assert set(inbox) == {"saved", "sent"}
            assert inbox["sent"].body == "hi" and inbox["sent"].is_read is False
            assert [m.subject for m in acc.sent.all()] == ["sent"]
            again = acc.inbox.get(id=saved.id)
            assert (again.subject, again.body) == ("saved", "kept")
            with pytest.raises(ErrorItemNotFound):
                acc.inbox.get(id="Tm90QW5JdGVt")
            # casfarm does not implement ConvertId: HTTP 500, soap:Fault ErrorInvalidRequest, which
            # exchangelib takes for a wrong schema version, tries them all, then raises.
            with pytest.raises(ErrorInvalidServerVersion):
                list(acc.protocol.convert_ids(
                    [AlternateId(id="x", format=EWS_ID, mailbox=ADDRESS)], ENTRY_ID))  # fmt: skip
            acc.protocol.close()

        await trio.to_thread.run_sync(session)
        # The store is the farm's: whichever server took each request, both messages are there.
        assert len(farm.runtime("cas2").ews.mailbox.in_folder("inbox")) == 2


def send(sender: Account) -> None:
    """Mail to alice from `sender` (in a worker thread: exchangelib blocks)."""
    me = [Mailbox(email_address=ADDRESS)]
    Message(account=sender, subject="ping", body="b", to_recipients=me).send()


@pytest.mark.parametrize("mode", ["direct", "l7", "l4"])
async def test_a_streaming_subscription_receives_new_mail(mode: str) -> None:
    async with casfarm.running(servers=2, auth=True, ews_keepalive=0.2) as farm, \
            ews_endpoint(farm, mode) as where:  # fmt: skip
        listener, sender = account(*where), account(*where)
        # Every touch of an exchangelib folder may be I/O: in the worker thread, never here.
        subscription = await trio.to_thread.run_sync(
            lambda: listener.inbox.subscribe_to_streaming()
        )
        before = _ews_requests(farm)

        def listen() -> list[str]:
            for notification in listener.inbox.get_streaming_events(
                subscription, connection_timeout=1
            ):
                return [type(event).__name__ for event in notification.events]
            return []

        async with trio.open_nursery() as nursery:
            seen: list[list[str]] = []

            async def run_listener() -> None:
                seen.append(await trio.to_thread.run_sync(listen))

            nursery.start_soon(run_listener)
            await wait_for(lambda: _ews_requests(farm) > before)  # the stream is open
            await trio.sleep(0.5)  # and has sent keep-alives: the event must wake it
            await trio.to_thread.run_sync(send, sender)
        assert seen == [["CreatedEvent", "NewMailEvent"]]
        listener.protocol.close()
        sender.protocol.close()
