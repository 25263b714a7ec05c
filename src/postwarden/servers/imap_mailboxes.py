"""Commands about the user's mailboxes rather than the selected one.

LIST/LSUB (with LIST-EXTENDED, SPECIAL-USE, CHILDREN and LIST-STATUS),
STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, the QUOTA reads
and APPEND. APPEND streams the message into a new message file as it
arrives (never held whole in memory); the intake files it (quota checked in
the same transaction), or drops the file if the store refuses it.
"""

from __future__ import annotations

import bisect
import re
import time

from postwarden.protocol.imap import commands as c
from postwarden.protocol.imap import responses as r
from postwarden.servers import connlog
from postwarden.servers.imap_core import SessionCore
from postwarden.storage.interfaces import AlreadyExists, BlobWriter, NotFound, StoreError
from postwarden.storage.mailbox import (
    DELIMITER,
    INBOX,
    Mailbox,
    MailboxInUse,
    QuotaExceeded,
    split_flags,
)

_SPECIAL_USE = {"\\sent", "\\drafts", "\\trash", "\\junk", "\\archive", "\\all", "\\flagged"}


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """LIST wildcards: ``*`` matches anything, ``%`` anything but the delimiter."""
    full = pattern if pattern.startswith(DELIMITER) or not reference else (
        reference.rstrip(DELIMITER) + DELIMITER + pattern if reference else pattern)
    out = []
    for char in full:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(char))
    text = "".join(out)
    if full.upper().startswith(INBOX):  # INBOX is case-insensitive
        text = "(?i:" + text[:len(INBOX)] + ")" + text[len(INBOX):]
    return re.compile(text + r"\Z", re.DOTALL)


class MailboxCommands(SessionCore):
    def __init__(self) -> None:
        self.appending: tuple[c.Append, BlobWriter] | None = None
        super().__init__()

    async def mailbox_command(self, command: c.Command) -> bool:
        """Answer a mailbox-level command; False if it is not one of them."""
        match command:
            case c.List():
                await self.list_mailboxes(command)
            case c.Status():
                await self.status(command)
            case c.Create() | c.Delete() | c.Rename() | c.Subscribe() | c.Unsubscribe():
                await self.change(command)
            case c.GetQuota() | c.GetQuotaRoot():
                await self.quota(command)
            case c.Append():
                await self.append_start(command)
            case _:
                return False
        return True

    # --- LIST, STATUS -------------------------------------------------------------------

    async def list_mailboxes(self, command: c.List) -> None:
        mailboxes = self.services.mailboxes
        send = self.machine.send
        if not command.lsub and command.patterns == ("",):
            send(r.ListData("", ("\\Noselect",)))  # the delimiter and root (RFC 9051 §6.3.9)
            send(r.Done(r.Status.OK, "LIST completed"))
            return
        boxes = {m.name: m for m in await mailboxes.list_mailboxes(self.account)}
        subscribed = set(await mailboxes.subscriptions(self.account))
        names = sorted(boxes)
        patterns = [_pattern(command.reference, p) for p in command.patterns]
        only_subscribed = command.lsub or c.ListSelect.SUBSCRIBED in command.select
        special_only = c.ListSelect.SPECIAL_USE in command.select
        recursive = c.ListSelect.RECURSIVEMATCH in command.select
        candidates = sorted(subscribed | set(names)) if only_subscribed else names
        if only_subscribed and recursive:
            # RFC 5258 §3.4: a name that does not exist at all is listed (\NonExistent)
            # when a subscribed descendant makes it a CHILDINFO parent.
            candidates = sorted(set(candidates) | {
                name[:at] for name in subscribed
                for at in range(len(name)) if name[at] == DELIMITER and at > 0})
        for name in candidates:
            if not any(p.match(name) for p in patterns):
                continue
            # RFC 5258 §3.5: a parent the pattern matches is listed with CHILDINFO when a
            # subscribed descendant is one the pattern itself does not reach.
            child_info = recursive and any(
                d.startswith(name + DELIMITER) and not any(p.match(d) for p in patterns)
                for d in subscribed)
            if only_subscribed and name not in subscribed and not child_info:
                continue
            box = boxes.get(name)
            if special_only and (box is None or not box.special_use):
                continue
            attributes = self._attributes(name, box, names, subscribed, command)
            send(r.ListData(name, attributes, lsub=command.lsub, child_info=child_info))
            if command.status and box is not None:
                send(await self._status_data(box, command.status))
        send(r.Done(r.Status.OK, f"{'LSUB' if command.lsub else 'LIST'} completed"))

    @staticmethod
    def _attributes(name: str, box: Mailbox | None, names: list[str], subscribed: set[str],
                    command: c.List) -> tuple[str, ...]:
        attributes: list[str] = []
        if box is None:
            attributes.append("\\NonExistent" if not command.lsub else "\\Noselect")
        prefix = name + DELIMITER
        at = bisect.bisect_left(names, prefix)
        has_children = at < len(names) and names[at].startswith(prefix)
        attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if box is not None and box.special_use and (
                not command.extended or c.ListReturn.SPECIAL_USE in command.returns
                or c.ListSelect.SPECIAL_USE in command.select):
            attributes.append(box.special_use)
        if not command.lsub and name in subscribed and (
                c.ListReturn.SUBSCRIBED in command.returns
                or c.ListSelect.SUBSCRIBED in command.select):
            attributes.append("\\Subscribed")
        return tuple(attributes)

    async def _status_data(self, box: Mailbox, items: tuple[c.StatusItem, ...]
                           ) -> r.StatusData:
        mailboxes = self.services.mailboxes
        status = await mailboxes.status(box.id)
        recent = max(0, status.uidnext - status.first_recent) if status.messages else 0
        known = {
            c.StatusItem.MESSAGES: status.messages,
            c.StatusItem.RECENT: min(recent, status.messages),
            c.StatusItem.UIDNEXT: status.uidnext,
            c.StatusItem.UIDVALIDITY: box.uidvalidity,
            c.StatusItem.UNSEEN: status.unseen,
            c.StatusItem.DELETED: status.deleted,
            c.StatusItem.SIZE: status.size,
            c.StatusItem.HIGHESTMODSEQ: status.highestmodseq,
            c.StatusItem.APPENDLIMIT: self.settings.max_append_size,
        }
        values = [(item, known[item]) for item in items]
        return r.StatusData(box.name, tuple(values))

    async def status(self, command: c.Status) -> None:
        box = await self.services.mailboxes.get_mailbox(self.account, command.mailbox)
        if box is None:
            self.machine.send(r.Done(r.Status.NO, "No such mailbox", r.Code.NONEXISTENT))
            return
        self.machine.send(await self._status_data(box, command.items))
        self.machine.send(r.Done(r.Status.OK, "STATUS completed"))

    # --- CREATE, DELETE, RENAME, SUBSCRIBE ------------------------------------------------------

    async def change(self, command: c.Create | c.Delete | c.Rename | c.Subscribe
                     | c.Unsubscribe) -> None:
        mailboxes, account = self.services.mailboxes, self.account
        verb = type(command).__name__.upper()
        try:
            match command:
                case c.Create(mailbox=name, special_use=uses):
                    # RFC 6154 §3: a use that cannot be given means no mailbox at all.
                    if len(uses) > 1 or any(u.lower() not in _SPECIAL_USE for u in uses):
                        self.machine.send(r.Done(
                            r.Status.NO, "Unknown special use, or more than one",
                            r.Code.USEATTR))
                        return
                    special = uses[0] if uses else None
                    await mailboxes.create_mailbox(account, name.rstrip(DELIMITER), special)
                case c.Delete(mailbox=name):
                    if name == INBOX:
                        self.machine.send(r.Done(r.Status.NO, "INBOX cannot be deleted",
                                                 r.Code.CANNOT))
                        return
                    await mailboxes.delete_mailbox(account, name)
                case c.Rename(mailbox=old, new_name=new):
                    await mailboxes.rename_mailbox(account, old, new)
                case c.Subscribe(mailbox=name):
                    await mailboxes.subscribe(account, name)
                case c.Unsubscribe(mailbox=name):
                    await mailboxes.unsubscribe(account, name)
        except AlreadyExists:
            self.machine.send(r.Done(r.Status.NO, "Mailbox already exists",
                                     r.Code.ALREADYEXISTS))
            return
        except NotFound:
            self.machine.send(r.Done(r.Status.NO, "No such mailbox", r.Code.NONEXISTENT))
            return
        except StoreError as exc:
            self.machine.send(r.Done(r.Status.NO, str(exc) or f"{verb} refused", r.Code.CANNOT))
            return
        self.machine.send(r.Done(r.Status.OK, f"{verb} completed"))

    # --- QUOTA (RFC 9208, read-only) ---------------------------------------------------------

    async def quota(self, command: c.GetQuota | c.GetQuotaRoot) -> None:
        send = self.machine.send
        if isinstance(command, c.GetQuota) and command.root != "":
            send(r.Done(r.Status.NO, "No such quota root", r.Code.NONEXISTENT))
            return
        if isinstance(command, c.GetQuotaRoot):
            box = await self.services.mailboxes.get_mailbox(self.account, command.mailbox)
            if box is None:
                send(r.Done(r.Status.NO, "No such mailbox", r.Code.NONEXISTENT))
                return
            send(r.QuotaRootData(command.mailbox, ("",)))
        quota = await self.services.mailboxes.quota(self.account)
        if quota.limit is not None:
            send(r.QuotaData("", (("STORAGE", (quota.used + 1023) // 1024,
                                   quota.limit // 1024),)))
        send(r.Done(r.Status.OK, "GETQUOTA completed"))

    # --- APPEND -------------------------------------------------------------------------------

    async def append_start(self, command: c.Append) -> None:
        mailboxes, intake = self.services.mailboxes, self.services.intake
        if intake is None:
            self.machine.send(r.Done(r.Status.NO, "APPEND is not available", r.Code.CANNOT))
            return
        box = await mailboxes.get_mailbox(self.account, command.mailbox)
        if box is None:
            self.machine.send(r.Done(r.Status.NO, "No such mailbox", r.Code.TRYCREATE))
            return
        quota = await mailboxes.quota(self.account)
        if quota.limit is not None and quota.used + command.size > quota.limit:
            self.machine.send(r.Done(r.Status.NO, "Over quota", r.Code.OVERQUOTA))
            return
        self.appending = (command, intake.open_append())  # a new file, as SMTP's DATA
        self.machine.send(r.Proceed())

    def append_data(self, data: bytes) -> None:
        if self.appending is not None:
            self.appending[1].write(data)

    def append_abort(self) -> None:
        if self.appending is not None:
            self.appending[1].abort()
            self.appending = None

    async def append_end(self) -> None:
        """The whole message is in: the intake makes it durable and files it."""
        assert self.appending is not None and self.services.intake is not None
        command, writer = self.appending
        self.appending = None
        bits, keywords = split_flags(f for f in command.flags if f.lower() != "\\recent")
        when = command.internal_date.timestamp() if command.internal_date else time.time()
        try:
            appended = await self.services.intake.append(
                writer, self.account, command.mailbox, flags=bits, keywords=keywords,
                internaldate=when)
        except QuotaExceeded:
            self.machine.send(r.Done(r.Status.NO, "Over quota", r.Code.OVERQUOTA))
            return
        except (NotFound, MailboxInUse):
            self.machine.send(r.Done(r.Status.NO, "No such mailbox", r.Code.TRYCREATE))
            return
        connlog.current().messages += 1
        self.machine.send(r.Done(r.Status.OK, "APPEND completed",
                                 r.AppendUid(appended.uidvalidity, appended.uid)))
