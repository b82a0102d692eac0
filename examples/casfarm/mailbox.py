"""The farm's mailbox store: folders, messages and streaming subscriptions, as values.

Theory of operation: one `Mailbox` per farm stands for the mailbox database
behind the CAS servers. A CAS holds no mailbox state (Exchange 2016/2019 front
ends are stateless), so every server reads and writes this one, and a message
created through cas1 is found, and notified, through cas2. Subscriptions keep
the events not yet delivered; the streaming side (`casfarm.ewsstream`) takes
them. Pure: no I/O, time passed in.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Distinguished folder id → (display name, folder class, parent).
FOLDERS: dict[str, tuple[str, str, str | None]] = {
    "root": ("Root", "", None),
    "msgfolderroot": ("Top of Information Store", "IPF.Note", "root"),
    "inbox": ("Inbox", "IPF.Note", "msgfolderroot"),
    "drafts": ("Drafts", "IPF.Note", "msgfolderroot"),
    "sentitems": ("Sent Items", "IPF.Note", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "IPF.Note", "msgfolderroot"),
    "outbox": ("Outbox", "IPF.Note", "msgfolderroot"),
}
CHANGE_KEY = "CQAAABYAAAA="
MAX_ITEMS = 1000  # a lab mailbox; the oldest go first
MAX_SUBSCRIPTIONS = 1000


def folder_id(name: str) -> str:
    """The opaque FolderId of distinguished folder `name`."""
    return base64.b64encode(f"casfarm:folder:{name}".encode()).decode()


def folder_named(ident: str) -> str | None:
    """The distinguished name behind a FolderId or a distinguished id, or None."""
    if ident.lower() in FOLDERS:
        return ident.lower()
    return next((name for name in FOLDERS if folder_id(name) == ident), None)


@dataclass(frozen=True)
class Recipient:
    """A mailbox as EWS names it."""

    name: str
    address: str


@dataclass(frozen=True)
class Message:
    """One message in a folder.

    Attributes:
        item_id: its opaque ItemId.
        folder: the distinguished name of its folder.
        received: ISO 8601 UTC time it landed.
    """

    item_id: str
    folder: str
    subject: str
    body: str
    body_type: str
    sender: Recipient
    to: tuple[Recipient, ...]
    received: str
    is_read: bool = False


@dataclass(frozen=True)
class Event:
    """A notification owed to a subscription: CreatedEvent, NewMailEvent, ..."""

    kind: str
    item_id: str
    folder: str
    timestamp: str


@dataclass
class Subscription:
    """A streaming subscription: the folders and event types it watches, events pending."""

    folders: frozenset[str]
    kinds: frozenset[str]
    pending: list[Event] = field(default_factory=list)


@dataclass
class Mailbox:
    """The farm's mailbox and its directory.

    Attributes:
        owner: the mailbox's owner.
        directory: everyone ResolveNames knows (the lab users).
    """

    owner: Recipient
    directory: tuple[Recipient, ...]
    messages: list[Message] = field(default_factory=list)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @classmethod
    def for_users(cls, users: Iterable[str], dns_domain: str) -> Mailbox:
        """A mailbox owned by the first of `users`, with all of them in the directory."""
        people = tuple(Recipient(u, f"{u}@{dns_domain}") for u in users)
        if not people:
            raise ValueError("a mailbox needs at least one user")
        return cls(people[0], people)

    def _next(self, kind: str) -> str:
        return base64.b64encode(f"casfarm:{kind}:{next(self._ids):08d}".encode()).decode()

    def in_folder(self, folder: str) -> list[Message]:
        """The messages of one folder, newest first (as FindItem sorts by default)."""
        return [msg for msg in reversed(self.messages) if msg.folder == folder]

    def item(self, item_id: str) -> Message | None:
        """One message by ItemId, or None."""
        return next((msg for msg in self.messages if msg.item_id == item_id), None)

    def add(self, folder: str, draft: Message, now: str, *, new_mail: bool) -> Message:
        """Store a copy of `draft` in `folder` with a fresh id; notify the subscriptions.

        `new_mail` marks a delivery (NewMailEvent besides CreatedEvent).
        """
        stored = Message(
            self._next("item"), folder, draft.subject, draft.body, draft.body_type,
            draft.sender, draft.to, now, is_read=not new_mail,
        )  # fmt: skip
        self.messages.append(stored)
        del self.messages[:-MAX_ITEMS]
        kinds = ("CreatedEvent", "NewMailEvent") if new_mail else ("CreatedEvent",)
        for sub in self.subscriptions.values():
            if folder in sub.folders:
                sub.pending.extend(
                    Event(k, stored.item_id, folder, now) for k in kinds if k in sub.kinds
                )
                del sub.pending[:-MAX_ITEMS]  # a subscription nobody streams must not grow
        return stored

    def subscribe(self, folders: Sequence[str], kinds: Sequence[str]) -> str:
        """A new streaming subscription; its SubscriptionId."""
        ident = self._next("subscription")
        self.subscriptions[ident] = Subscription(frozenset(folders), frozenset(kinds))
        while len(self.subscriptions) > MAX_SUBSCRIPTIONS:  # no client can grow the farm
            del self.subscriptions[next(iter(self.subscriptions))]  # the oldest goes
        return ident

    def take_events(self, subscription: str) -> list[Event]:
        """The events pending for one subscription, which are then delivered."""
        sub = self.subscriptions.get(subscription)
        if sub is None:
            return []
        events, sub.pending = sub.pending, []
        return events

    def resolve(self, entry: str) -> list[Recipient]:
        """Directory entries whose name or address starts with `entry` (ANR, simplified)."""
        wanted = entry.strip().lower().removeprefix("smtp:")
        return [
            r for r in self.directory
            if wanted and (r.name.lower().startswith(wanted) or r.address.lower() == wanted)
        ]  # fmt: skip
