"""casfarm's EWS: SOAP faults, operation errors, the mailbox, and the streaming answer's
rhythm on trio's autojump clock over memory streams."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h11
import trio
import trio.testing
from casfarm import ews
from casfarm.ewsstream import EwsStore, stream_events
from casfarm.ewsxml import ERRORS, MESSAGES, SAMPLE_REQUEST, SOAP, TYPES
from casfarm.http import HttpExchange, serve_http
from casfarm.mailbox import MAX_ITEMS, MAX_SUBSCRIPTIONS, Mailbox, Message, Recipient

M, T = f"{{{MESSAGES}}}", f"{{{TYPES}}}"


def envelope(operation: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP}" xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><s:Body>'
            f"{operation}</s:Body></s:Envelope>").encode()  # fmt: skip


def mailbox() -> Mailbox:
    return Mailbox.for_users(["alice", "bob"], "lab.local")


def answer(raw: bytes, box: Mailbox) -> tuple[int, ET.Element]:
    result = ews.handle(raw, box, 1_800_000_000.0)
    assert isinstance(result, ews.Answer)
    return result.status, ET.fromstring(result.body)


def fault_code(root: ET.Element) -> str | None:
    return root.findtext(f"{{{SOAP}}}Body/{{{SOAP}}}Fault/detail/{{{ERRORS}}}ResponseCode")


def test_what_is_not_ews_is_a_soap_fault_with_http_500() -> None:
    box = mailbox()
    for raw in (b"", b"<soap/>", b"<!DOCTYPE x []><x/>", envelope("<Nope/>")):
        status, root = answer(raw, box)
        assert (status, fault_code(root)) == (500, "ErrorSchemaValidation"), raw
    status, root = answer(envelope("<m:ConvertId/>"), box)
    assert (status, fault_code(root)) == (500, "ErrorInvalidRequest")
    assert root.findtext(f".//{{{SOAP}}}Fault/faultcode") == "a:ErrorInvalidRequest"
    status, root = answer(envelope("<m:GetFolder/>"), box)  # no FolderIds
    assert (status, fault_code(root)) == (500, "ErrorSchemaValidation")


def test_an_operation_error_is_a_200_with_response_class_error() -> None:
    status, root = answer(envelope('<m:GetItem><m:ItemIds><t:ItemId Id="bm8="/></m:ItemIds>'
                                   "</m:GetItem>"), mailbox())  # fmt: skip
    message = root.find(f".//{M}GetItemResponseMessage")
    assert status == 200 and message is not None
    assert message.get("ResponseClass") == "Error"
    assert message.findtext(f"{M}ResponseCode") == "ErrorItemNotFound"
    status, root = answer(SAMPLE_REQUEST, mailbox())
    assert status == 200 and root.findtext(f".//{T}DisplayName") == "Inbox"
    assert root.find(f".//{{{SOAP}}}Header/{T}ServerVersionInfo") is not None


def test_a_message_sent_to_a_lab_user_lands_in_the_inbox_and_is_notified() -> None:
    box = mailbox()
    subscribe = envelope('<m:Subscribe><m:StreamingSubscriptionRequest><t:FolderIds>'
                         '<t:DistinguishedFolderId Id="inbox"/></t:FolderIds><t:EventTypes>'
                         "<t:EventType>NewMailEvent</t:EventType></t:EventTypes>"
                         "</m:StreamingSubscriptionRequest></m:Subscribe>")  # fmt: skip
    sub = answer(subscribe, box)[1].findtext(f".//{M}SubscriptionId") or ""
    send = envelope('<m:CreateItem MessageDisposition="SendOnly"><m:Items><t:Message>'
                    "<t:Subject>hello</t:Subject><t:ToRecipients><t:Mailbox><t:EmailAddress>"
                    "bob@lab.local</t:EmailAddress></t:Mailbox></t:ToRecipients></t:Message>"
                    "</m:Items></m:CreateItem>")  # fmt: skip
    assert answer(send, box)[0] == 200
    [landed] = box.in_folder("inbox")
    assert landed.subject == "hello" and not landed.is_read
    assert [e.kind for e in box.take_events(sub)] == ["NewMailEvent"]  # CreatedEvent not asked
    outside = send.replace(b"bob@lab.local", b"someone@example.org")
    assert answer(outside, box)[0] == 200 and len(box.in_folder("inbox")) == 1


async def test_a_stream_keeps_alive_delivers_events_and_closes_at_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = EwsStore(mailbox())
    sub = store.mailbox.subscribe(["inbox"], ["NewMailEvent"])
    client, server = trio.testing.memory_stream_pair()

    async def handler(ex: HttpExchange) -> None:
        result = ews.handle(await ex.read_body(), store.mailbox, 0.0)
        assert isinstance(result, ews.Stream)
        await stream_events(ex, store, result, keepalive=10.0)

    request = envelope(f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{sub}"
                       "</t:SubscriptionId></m:SubscriptionIds><m:ConnectionTimeout>1"
                       "</m:ConnectionTimeout></m:GetStreamingEvents>")  # fmt: skip
    conn = h11.Connection(h11.CLIENT)
    head = h11.Request(method="POST", target="/EWS/Exchange.asmx",
                       headers=[("Host", "x"), ("Content-Length", str(len(request)))])  # fmt: skip
    await client.send_all(conn.send(head) + conn.send(h11.Data(data=request))
                          + conn.send(h11.EndOfMessage()))  # fmt: skip
    seen: list[tuple[float, str]] = []

    async def deliver_at_15() -> None:
        await trio.sleep(15)
        me = Recipient("alice", "alice@lab.local")
        draft = Message("", "", "s", "b", "Text", me, (me,), "")
        store.mailbox.add("inbox", draft, "2027-01-15T08:00:15Z", new_mail=True)
        store.changed()  # what casfarm.traffic does after every EWS request

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, handler, list)
        nursery.start_soon(deliver_at_15)
        start = trio.current_time()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await client.receive_some())
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                doc = ET.fromstring(bytes(event.data))
                kind = "event" if doc.find(f".//{T}NewMailEvent") is not None else ""
                status = doc.findtext(f".//{M}ConnectionStatus") or "?"
                seen.append((round(trio.current_time() - start), kind or status))
            elif isinstance(event, h11.EndOfMessage):
                break
        nursery.cancel_scope.cancel()
    assert seen == [(10, "OK"), (15, "event"), (25, "OK"), (35, "OK"), (45, "OK"), (55, "OK"),
                    (60, "Closed")]  # fmt: skip


def test_subscriptions_and_their_pending_events_are_bounded() -> None:
    box = mailbox()
    first = box.subscribe(["inbox"], ["CreatedEvent"])
    for _ in range(MAX_SUBSCRIPTIONS):
        box.subscribe(["drafts"], ["CreatedEvent"])
    assert len(box.subscriptions) == MAX_SUBSCRIPTIONS and first not in box.subscriptions
    kept = next(iter(box.subscriptions))
    me = Recipient("alice", "alice@lab.local")
    for _ in range(MAX_ITEMS + 5):
        box.add("drafts", Message("", "", "s", "", "Text", me, (), ""), "t", new_mail=False)
    assert len(box.take_events(kept)) == MAX_ITEMS and len(box.messages) == MAX_ITEMS
