"""EWS operations on the farm's mailbox: a SOAP request in, the answer out.

Theory of operation: `handle` parses the envelope (`casfarm.ewsxml`), runs one
operation on the `Mailbox` and returns an `Answer` (status, headers, body) or,
for GetStreamingEvents, a `Stream` that `casfarm.ewsstream` serves. As
Exchange does, a request that is not EWS, or names an operation this server
does not know, is answered HTTP 500 with a `soap:Fault` whose detail carries
the ResponseCode; an error of one operation on valid input (an unknown item,
a name that resolves to no one) is a 200 whose response message has
`ResponseClass="Error"`. Implemented: ResolveNames, GetFolder, FindItem,
CreateItem, GetItem, Subscribe (streaming) and GetStreamingEvents.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from casfarm import ewsxml as x
from casfarm.mailbox import (
    CHANGE_KEY,
    FOLDERS,
    Mailbox,
    Message,
    Recipient,
    folder_id,
    folder_named,
)

XML = ("Content-Type", "text/xml; charset=utf-8")
MAX_CONNECTION_TIMEOUT = 30  # minutes, GetStreamingEvents' upper bound


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class Stream:
    """GetStreamingEvents accepted: stream these subscriptions for `minutes`."""

    subscriptions: tuple[str, ...]
    minutes: int


def _ok(body: bytes) -> Answer:
    return Answer(200, (XML,), body)


def fault(code: str, message: str, violation: str = "") -> Answer:
    """HTTP 500 with a SOAP fault, as Exchange answers a request it cannot run."""
    return Answer(500, (XML,), x.fault(code, message, violation))


def iso(now: float) -> str:
    """Unix time as EWS writes a dateTime (UTC, whole seconds)."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handle(raw: bytes, mailbox: Mailbox, now: float) -> Answer | Stream:
    """Run one EWS request against `mailbox` at Unix time `now`."""
    try:
        request = x.parse(raw)
    except x.SchemaError as e:
        return fault("ErrorSchemaValidation", "The request failed schema validation.", str(e))
    operation = _OPERATIONS.get(request.operation)
    if operation is None:
        return fault("ErrorInvalidRequest", f"The request is invalid: {request.operation} "
                     "is not an operation this server implements.")  # fmt: skip
    try:
        return operation(request.body, mailbox, now)
    except x.SchemaError as e:
        return fault("ErrorSchemaValidation", "The request failed schema validation.", str(e))


def _required(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    if found is None:
        raise x.SchemaError(f"The element {tag.split('}')[-1]} is missing.")
    return found


def _folder_ids(container: ET.Element) -> list[str]:
    """Each FolderId or DistinguishedFolderId's Id under `container`, in order."""
    ids = [el.get("Id", "") for el in container if el.tag in (x.t("FolderId"),
           x.t("DistinguishedFolderId"))]  # fmt: skip
    if not ids:
        raise x.SchemaError("No FolderId or DistinguishedFolderId was given.")
    return ids


def _mailbox_xml(who: Recipient) -> str:
    return (
        f"<t:Mailbox>{x.element('t:Name', who.name)}{x.element('t:EmailAddress', who.address)}"
        "<t:RoutingType>SMTP</t:RoutingType><t:MailboxType>Mailbox</t:MailboxType></t:Mailbox>"
    )


def _folder_xml(name: str, mailbox: Mailbox) -> str:
    display, folder_class, parent = FOLDERS[name]
    children = sum(1 for _, _, p in FOLDERS.values() if p == name)
    messages = mailbox.in_folder(name)
    unread = sum(1 for msg in messages if not msg.is_read)
    parent_xml = ""
    if parent is not None:
        parent_xml = f'<t:ParentFolderId Id="{folder_id(parent)}" ChangeKey="{CHANGE_KEY}"/>'
    return (
        f'<t:Folder><t:FolderId Id="{folder_id(name)}" ChangeKey="{CHANGE_KEY}"/>{parent_xml}'
        f"{x.element('t:FolderClass', folder_class) if folder_class else ''}"
        f"{x.element('t:DisplayName', display)}<t:TotalCount>{len(messages)}</t:TotalCount>"
        f"<t:ChildFolderCount>{children}</t:ChildFolderCount>"
        f"<t:UnreadCount>{unread}</t:UnreadCount></t:Folder>"
    )


def _message_xml(msg: Message) -> str:
    to = "".join(_mailbox_xml(r) for r in msg.to)
    sender = _mailbox_xml(msg.sender)
    return (
        f'<t:Message><t:ItemId Id="{msg.item_id}" ChangeKey="{CHANGE_KEY}"/>'
        f'<t:ParentFolderId Id="{folder_id(msg.folder)}" ChangeKey="{CHANGE_KEY}"/>'
        f"<t:ItemClass>IPM.Note</t:ItemClass>{x.element('t:Subject', msg.subject)}"
        f"<t:Body BodyType={x.attr(msg.body_type)}>{x.text(msg.body)}</t:Body>"
        f"{x.element('t:DateTimeReceived', msg.received)}<t:Size>{len(msg.body)}</t:Size>"
        f"{x.element('t:DateTimeSent', msg.received)}{x.element('t:DateTimeCreated', msg.received)}"
        f"<t:HasAttachments>false</t:HasAttachments>"
        f"<t:Sender>{sender}</t:Sender>{f'<t:ToRecipients>{to}</t:ToRecipients>' if to else ''}"
        f"<t:IsRead>{'true' if msg.is_read else 'false'}</t:IsRead><t:From>{sender}</t:From>"
        "</t:Message>"
    )


def _resolve_names(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    entry = _required(op, x.m("UnresolvedEntry")).text or ""
    found = mailbox.resolve(entry)
    if not found:
        message = x.error("ResolveNames", "ErrorNameResolutionNoResults", "No results were found.")
        return _ok(x.response("ResolveNames", [message]))
    resolutions = "".join(f"<t:Resolution>{_mailbox_xml(r)}</t:Resolution>" for r in found)
    content = (
        f'<m:ResolutionSet TotalItemsInView="{len(found)}" IncludesLastItemInRange="true">'
        f"{resolutions}</m:ResolutionSet>"
    )
    if len(found) > 1:
        message = x.error("ResolveNames", "ErrorNameResolutionMultipleResults",
                          "Multiple results were found.", content)  # fmt: skip
    else:
        message = x.success("ResolveNames", content)
    return _ok(x.response("ResolveNames", [message]))


def _not_found(operation: str, what: str) -> str:
    return x.error(operation, f"Error{what}NotFound",
                   "The specified object was not found in the store.")  # fmt: skip


def _get_folder(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    messages = []
    for ident in _folder_ids(_required(op, x.m("FolderIds"))):
        name = folder_named(ident)
        if name is None:
            messages.append(_not_found("GetFolder", "Folder"))
        else:
            folder = _folder_xml(name, mailbox)
            messages.append(x.success("GetFolder", f"<m:Folders>{folder}</m:Folders>"))
    return _ok(x.response("GetFolder", messages))


def _page(op: ET.Element) -> tuple[int, int]:
    view = op.find(x.m("IndexedPageItemView"))
    if view is None:
        return 0, 1000
    try:
        return int(view.get("Offset", "0")), int(view.get("MaxEntriesReturned", "1000"))
    except ValueError:
        raise x.SchemaError("IndexedPageItemView has a bad Offset or MaxEntriesReturned.") from None


def _find_item(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    offset, limit = _page(op)
    messages = []
    for ident in _folder_ids(_required(op, x.m("ParentFolderIds"))):
        name = folder_named(ident)
        if name is None:
            messages.append(_not_found("FindItem", "Folder"))
            continue
        found = mailbox.in_folder(name)
        page = found[offset : offset + limit]
        last = offset + len(page) >= len(found)
        content = (
            f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" TotalItemsInView='
            f'"{len(found)}" IncludesLastItemInRange="{"true" if last else "false"}"><t:Items>'
            f"{''.join(_message_xml(msg) for msg in page)}</t:Items></m:RootFolder>"
        )
        messages.append(x.success("FindItem", content))
    return _ok(x.response("FindItem", messages))


def _recipients(parent: ET.Element | None) -> tuple[Recipient, ...]:
    if parent is None:
        return ()
    out = []
    for box in parent.iter(x.t("Mailbox")):
        address = (box.findtext(x.t("EmailAddress")) or "").strip()
        if not address:
            raise x.SchemaError("A recipient Mailbox has no EmailAddress.")
        out.append(Recipient((box.findtext(x.t("Name")) or address).strip(), address))
    return tuple(out)


def _draft(el: ET.Element, mailbox: Mailbox) -> Message:
    body = el.find(x.t("Body"))
    return Message(
        "", "", el.findtext(x.t("Subject")) or "", "" if body is None else body.text or "",
        "Text" if body is None else body.get("BodyType", "Text"), mailbox.owner,
        _recipients(el.find(x.t("ToRecipients"))), "",
    )  # fmt: skip


def _create_item(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    disposition = op.get("MessageDisposition", "SaveOnly")
    if disposition not in ("SaveOnly", "SendOnly", "SendAndSaveCopy"):
        raise x.SchemaError(f"MessageDisposition {disposition!r} is not valid.")
    saved = op.find(x.m("SavedItemFolderId"))
    target = "drafts" if disposition == "SaveOnly" else "sentitems"
    if saved is not None:
        target = folder_named(_folder_ids(saved)[0]) or ""
    messages = []
    for el in _required(op, x.m("Items")):
        if el.tag != x.t("Message"):
            messages.append(x.error("CreateItem", "ErrorInvalidRequest",
                                    "casfarm's mailbox stores messages only."))  # fmt: skip
            continue
        if not target:
            messages.append(_not_found("CreateItem", "Folder"))
            continue
        draft = _draft(el, mailbox)
        stamp = iso(now)
        if disposition == "SaveOnly":
            stored = mailbox.add(target, draft, stamp, new_mail=False)
            item = f'<t:Message><t:ItemId Id="{stored.item_id}" ChangeKey="{CHANGE_KEY}"/>'
            messages.append(x.success("CreateItem", f"<m:Items>{item}</t:Message></m:Items>"))
            continue
        if not draft.to:
            messages.append(x.error("CreateItem", "ErrorInvalidRecipients",
                                    "At least one recipient isn't valid."))  # fmt: skip
            continue
        local = {r.address.lower() for r in mailbox.directory}
        if any(r.address.lower() in local for r in draft.to):
            mailbox.add("inbox", draft, stamp, new_mail=True)  # delivered: the farm's mailbox
        if disposition == "SendAndSaveCopy":
            mailbox.add(target, draft, stamp, new_mail=False)
        messages.append(x.success("CreateItem", "<m:Items/>"))
    return _ok(x.response("CreateItem", messages))


def _get_item(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    messages = []
    ids = [el.get("Id", "") for el in _required(op, x.m("ItemIds")) if el.tag == x.t("ItemId")]
    for ident in ids:
        msg = mailbox.item(ident)
        if msg is None:
            messages.append(_not_found("GetItem", "Item"))
        else:
            messages.append(x.success("GetItem", f"<m:Items>{_message_xml(msg)}</m:Items>"))
    return _ok(x.response("GetItem", messages))


def _subscribe(op: ET.Element, mailbox: Mailbox, now: float) -> Answer:
    request = op.find(x.m("StreamingSubscriptionRequest"))
    if request is None:
        message = x.error("Subscribe", "ErrorInvalidSubscriptionRequest",
                          "casfarm offers streaming subscriptions only.")  # fmt: skip
        return _ok(x.response("Subscribe", [message]))
    folders = [folder_named(i) for i in _folder_ids(_required(request, x.t("FolderIds")))]
    kinds = [el.text or "" for el in _required(request, x.t("EventTypes"))]
    if None in folders:
        return _ok(x.response("Subscribe", [_not_found("Subscribe", "Folder")]))
    ident = mailbox.subscribe([f for f in folders if f is not None], kinds)
    message = x.success("Subscribe", x.element("m:SubscriptionId", ident))
    return _ok(x.response("Subscribe", [message]))


def _get_streaming_events(op: ET.Element, mailbox: Mailbox, now: float) -> Answer | Stream:
    ids = tuple(el.text or "" for el in _required(op, x.m("SubscriptionIds")))
    try:
        minutes = int(_required(op, x.m("ConnectionTimeout")).text or "")
    except ValueError:
        raise x.SchemaError("ConnectionTimeout is not an integer.") from None
    if not 1 <= minutes <= MAX_CONNECTION_TIMEOUT:
        raise x.SchemaError(f"ConnectionTimeout must be 1 to {MAX_CONNECTION_TIMEOUT} minutes.")
    unknown = [i for i in ids if i not in mailbox.subscriptions]
    if unknown or not ids:
        errors = "".join(x.element("t:SubscriptionId", i) for i in unknown)
        message = x.error("GetStreamingEvents", "ErrorSubscriptionNotFound",
                          "The specified subscription was not found.",
                          f'<m:ErrorSubscriptionIds xmlns:t="{x.TYPES}">{errors}'
                          "</m:ErrorSubscriptionIds>")  # fmt: skip
        return _ok(x.response("GetStreamingEvents", [message]))
    return Stream(ids, minutes)


_OPERATIONS: dict[str, Callable[[ET.Element, Mailbox, float], Answer | Stream]] = {
    "ResolveNames": _resolve_names,
    "GetFolder": _get_folder,
    "FindItem": _find_item,
    "CreateItem": _create_item,
    "GetItem": _get_item,
    "Subscribe": _subscribe,
    "GetStreamingEvents": _get_streaming_events,
}
