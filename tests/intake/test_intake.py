"""The intake: headers stamped, recipients resolved, one durable commit; real SQLite."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.config import RelayConfig
from postwarden.intake.accept import Intake, IntakeError, new_queue_id
from postwarden.intake.headers import (
    MAX_HEADER_BYTES,
    HeaderSectionTooLarge,
    MessageBuilder,
    TraceInfo,
    field_names,
    from_fields,
    received_header,
)
from postwarden.intake.recipients import AliasLoop, RecipientPolicy
from postwarden.mail import reply as R
from postwarden.mail.address import Address, parse_address
from postwarden.mail.envelope import DsnRecipient, Envelope
from postwarden.storage.interfaces import NotFound
from postwarden.storage.mailbox import Field, Flag, QuotaExceeded, UidSet, read_message
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore

HOST = "mx.example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
MAX_RECEIVED = 5
MESSAGE = b"From: a@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"
TRACE = TraceInfo("client.remote.test", "192.0.2.7", HOST, "QID", "ESMTPS", ALICE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "data")
    store.directory.add_domain("example.test")
    store.directory.add_account(ALICE, "hash")
    store.directory.add_account(BOB, "hash")
    yield store
    store.close()


@pytest.fixture
def aio(store: SqliteStore) -> Iterator[AsyncSqliteStore]:
    aio = AsyncSqliteStore(store)
    yield aio
    aio.close()


@pytest.fixture
def policy(aio: AsyncSqliteStore) -> RecipientPolicy:
    return RecipientPolicy(aio, RelayConfig(pop_before_smtp_minutes=10), HOST)


@pytest.fixture
def intake(store: SqliteStore, aio: AsyncSqliteStore, policy: RecipientPolicy) -> Intake:
    return Intake(store.blobs, aio, policy, HOST, MAX_RECEIVED)


def envelope(*recipients: str, sender: str | None = "sender@remote.test") -> Envelope:
    return Envelope(
        None if sender is None else parse_address(sender),
        tuple(DsnRecipient(parse_address(r)) for r in recipients),
    )


def inbox(store: SqliteStore, account: str) -> list[bytes]:
    box = store.mailboxes.get_mailbox(account, "INBOX")
    assert box is not None
    found = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
    return [store.blobs.read_blob(m.blob.name) for m in found if m.blob is not None]


def streamed(
    intake: Intake, data: bytes = MESSAGE, trace: TraceInfo | None = None
) -> tuple[str, MessageBuilder]:
    """A new queue ID and its message, streamed in as SMTP DATA would."""
    queue_id = new_queue_id()
    message = intake.open_message(queue_id, trace, add_submission_headers=False)
    message.write(data)
    return queue_id, message


class Blob:
    """A BlobWriter kept in memory, to watch what the MessageBuilder writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self) -> None:  # pragma: no cover - not called by the builder
        raise AssertionError

    def abort(self) -> None:  # pragma: no cover - not called by the builder
        raise AssertionError


def build(chunks: list[bytes], *, submission: bool = False, prefix: bytes = b"") -> bytes:
    blob = Blob()
    builder = MessageBuilder(blob, prefix, hostname=HOST, add_submission_headers=submission)
    for chunk in chunks:
        builder.write(chunk)
    builder.finish()
    return bytes(blob.data)


class TestAccept:
    async def test_local_message_lands_in_inbox_with_trace_header(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """The stored message is our Received header followed by the bytes as sent."""
        qid, message = streamed(intake, trace=TRACE)
        accepted = await intake.accept(qid, envelope(ALICE), message, trusted_origin=True)
        assert (accepted.queue_id, accepted.local_accounts, accepted.remote_count) == (
            qid, (ALICE,), 0)
        (stored,) = inbox(store, ALICE)
        assert stored.startswith(b"Received: from client.remote.test ([192.0.2.7])\r\n")
        assert stored.endswith(MESSAGE)
        assert store.queue.get_queued(qid) is None

    async def test_alias_to_two_users_and_one_external_address(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """One alias fans out to two INBOX rows and one queued recipient, one file."""
        store.directory.add_alias("team@example.test", [ALICE, BOB, "ext@remote.test"])
        queued: list[int] = []
        intake.on_queued = lambda: queued.append(1)
        accepted = await intake.submit(envelope("team@example.test"), MESSAGE)
        assert accepted.local_accounts == (ALICE, BOB)
        assert accepted.remote_count == 1
        assert inbox(store, ALICE) == inbox(store, BOB) == [MESSAGE]
        entry = store.queue.get_queued(accepted.queue_id)
        assert entry is not None
        assert [r.address for r in entry.recipients] == ["ext@remote.test"]
        assert entry.sender == "sender@remote.test"
        assert queued == [1], "the queue manager is woken for remote mail"

    async def test_nested_aliases_and_duplicates_deliver_once(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """A user reached directly and through two aliases gets one copy."""
        store.directory.add_alias("all@example.test", ["team@example.test", ALICE])
        store.directory.add_alias("team@example.test", [ALICE, BOB])
        accepted = await intake.submit(envelope("all@example.test", ALICE), MESSAGE)
        assert accepted.local_accounts == (ALICE, BOB)
        assert len(inbox(store, ALICE)) == 1
        assert len(inbox(store, BOB)) == 1

    async def test_local_only_mail_does_not_wake_the_queue(self, intake: Intake) -> None:
        """on_queued is for remote recipients only."""
        queued: list[int] = []
        intake.on_queued = lambda: queued.append(1)
        await intake.submit(envelope(ALICE), MESSAGE)
        assert queued == []

    async def test_postmaster_without_domain_goes_to_first_local_domain(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """``<postmaster>`` is delivered to postmaster at our first domain."""
        store.directory.add_alias("postmaster@example.test", [BOB])
        env = Envelope(None, (DsnRecipient(Address("postmaster", "")),))
        accepted = await intake.submit(env, MESSAGE)
        assert accepted.local_accounts == (BOB,)

    async def test_null_sender_is_stored_as_empty(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """A bounce (``<>``) keeps its empty reverse-path in the queue."""
        accepted = await intake.submit(envelope("x@remote.test", sender=None), MESSAGE)
        entry = store.queue.get_queued(accepted.queue_id)
        assert entry is not None
        assert entry.sender == ""

    async def test_local_copies_start_with_return_path_and_delivered_to(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """Each mailbox copy names its own final recipient; the queued file carries neither."""
        store.directory.add_alias("team@example.test", [ALICE, BOB, "ext@remote.test"])
        accepted = await intake.submit(envelope("team@example.test"), MESSAGE)
        for account in (ALICE, BOB):
            box = store.mailboxes.get_mailbox(account, "INBOX")
            assert box is not None
            (meta,) = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
            assert meta.blob is not None
            assert read_message(store.mailboxes.read_blob, meta.blob) == (
                b"Return-Path: <sender@remote.test>\r\n"
                + f"Delivered-To: {account}\r\n".encode() + MESSAGE)
        entry = store.queue.get_queued(accepted.queue_id)
        assert entry is not None and store.blobs.read_blob(entry.blob) == MESSAGE

    async def test_a_bounce_gets_an_empty_return_path(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """The null sender is written ``<>``."""
        await intake.submit(envelope(ALICE, sender=None), MESSAGE)
        box = store.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        (meta,) = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert read_message(store.mailboxes.read_blob, meta.blob, 0, 18) == b"Return-Path: <>\r\nD"

    @pytest.mark.parametrize(
        "aliases",
        [
            {"loop@example.test": ["loop@example.test"]},
            {"a@example.test": ["b@example.test"], "b@example.test": ["a@example.test"]},
            {"a@example.test": [ALICE, "b@example.test"], "b@example.test": ["A@Example.Test"]},
        ],
    )
    async def test_alias_loop_is_a_permanent_error_and_stores_nothing(
        self, intake: Intake, store: SqliteStore, aliases: dict[str, list[str]]
    ) -> None:
        """A loop refuses the message for good, and no copy or file is left behind."""
        for name, targets in aliases.items():
            store.directory.add_alias(name, targets)
        first = next(iter(aliases))
        qid, message = streamed(intake)
        with pytest.raises(IntakeError, match="alias loop") as info:
            await intake.accept(qid, envelope(first), message, trusted_origin=True)
        assert info.value.permanent
        assert inbox(store, ALICE) == []
        assert not store.blobs.blob_path(qid).exists()

    @pytest.mark.parametrize(("count", "refused"), [(0, False), (4, False), (5, True), (9, True)])
    async def test_too_many_received_headers_is_refused(
        self, intake: Intake, store: SqliteStore, count: int, refused: bool
    ) -> None:
        """At max_received_headers hops the message is a loop and is refused for good."""
        hops = b"".join(b"Received: from hop%d by x; date\r\n" % i for i in range(count))
        qid, message = streamed(intake, hops + MESSAGE, trace=TRACE)
        if refused:
            with pytest.raises(IntakeError) as info:
                await intake.accept(qid, envelope(ALICE), message, trusted_origin=True)
            assert info.value.permanent
            assert inbox(store, ALICE) == []
            assert not store.blobs.blob_path(qid).exists()
        else:
            await intake.accept(qid, envelope(ALICE), message, trusted_origin=True)
            assert len(inbox(store, ALICE)) == 1

    async def test_message_with_no_remaining_recipient_is_refused_without_a_file(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """An alias that vanished after RCPT is refused 5.1.1 and keeps no orphan file."""
        queue_id, message = streamed(intake)
        with pytest.raises(IntakeError) as refused:
            await intake.accept(queue_id, envelope("vanished@example.test"), message,
                                trusted_origin=True)
        assert (refused.value.permanent, refused.value.status) == (True, "5.1.1")
        assert not store.blobs.blob_path(queue_id).exists()

    async def test_alias_with_a_corrupt_target_is_a_temporary_refusal(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """A stored target that no longer parses: the client retries while the admin fixes it."""
        store.directory.add_alias("broken@example.test", ["not an address"])
        queue_id, message = streamed(intake)
        with pytest.raises(IntakeError, match="bad alias target") as refused:
            await intake.accept(queue_id, envelope("broken@example.test"), message,
                                trusted_origin=True)
        assert not refused.value.permanent
        assert not store.blobs.blob_path(queue_id).exists()


class TestSubmissionHeaders:
    @pytest.mark.parametrize(
        ("submission", "message", "adds"),
        [
            (True, b"Subject: x\r\n\r\nbody\r\n", {b"message-id", b"date"}),
            (True, b"Message-ID: <1@x>\r\nSubject: x\r\n\r\nbody\r\n", {b"date"}),
            (True, b"DATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n", {b"message-id"}),
            (True, b"Message-Id: <1@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nb\r\n",
             set()),
            (False, b"Subject: x\r\n\r\nbody\r\n", set()),
        ],
    )
    def test_adds_message_id_and_date_only_when_asked_and_missing(
        self, submission: bool, message: bytes, adds: set[bytes]
    ) -> None:
        """Only authenticated submissions get them, and never a second copy."""
        out = build([message], submission=submission)
        before, after = field_names(message), field_names(out)
        assert sorted(after) == sorted(before + list(adds))
        assert out.endswith(b"\r\n\r\n" + message.split(b"\r\n\r\n", 1)[1])

    def test_added_message_id_names_our_host(self) -> None:
        """The generated Message-ID is a valid msg-id at our hostname."""
        out = build([b"Subject: x\r\n\r\nbody\r\n"], submission=True)
        parsed = email.message_from_bytes(out, policy=email.policy.default)
        assert re.fullmatch(r"<[^<>@\s]+@mx\.example\.test>", parsed["Message-ID"])
        assert parsed["Date"].datetime is not None

    def test_header_section_without_a_body(self) -> None:
        """A message that is only headers is stored whole, line-terminated."""
        assert build([b"Subject: x\r\nFrom: a@b"]) == b"Subject: x\r\nFrom: a@b\r\n"
        assert build([b"Subject: x\r\n"]) == b"Subject: x\r\n"
        out = build([b"Subject: x\r\n"], submission=True)
        assert out.startswith(b"Subject: x\r\nMessage-ID: ")
        assert field_names(out) == [b"subject", b"message-id", b"date"]

    def test_message_with_no_header_section(self) -> None:
        """A message starting with a blank line gets its headers before that line."""
        assert build([b"\r\nbody only\r\n"]) == b"\r\nbody only\r\n"
        out = build([b"\r\nbody only\r\n"], submission=True, prefix=b"Received: x\r\n")
        head, body = out.split(b"\r\n\r\n", 1)
        assert body == b"body only\r\n"
        assert field_names(head + b"\r\n") == [b"received", b"message-id", b"date"]

    def test_blank_line_split_across_writes_is_found(self) -> None:
        """The end of the header section may arrive one byte at a time."""
        message = b"Subject: x\r\n\r\nbody\r\n"
        out = build([message[i:i + 1] for i in range(len(message))], submission=True)
        head, body = out.split(b"\r\n\r\n", 1)
        assert body == b"body\r\n"
        assert field_names(head + b"\r\n") == [b"subject", b"message-id", b"date"]

    def test_empty_message(self) -> None:
        """Nothing in, nothing but the trace header out."""
        assert build([], prefix=b"Received: x\r\n") == b"Received: x\r\n"

    @pytest.mark.parametrize("size", [64, 777, 4096])
    def test_a_header_section_of_exactly_the_bound_is_kept_whole(self, size: int) -> None:
        """Bound = the header section with its last CRLF; the blank line may
        arrive in any piece."""
        line = b"X-Filler: " + b"a" * 88 + b"\r\n"
        head = line * ((MAX_HEADER_BYTES - 200) // len(line))
        head += b"X-Last: " + b"b" * (MAX_HEADER_BYTES - len(head) - 10) + b"\r\n"
        assert len(head) == MAX_HEADER_BYTES
        message = head + b"\r\nbody\r\n"
        chunks = [message[i:i + size] for i in range(0, len(message), size)]
        assert build(chunks, prefix=b"Received: x\r\n") == b"Received: x\r\n" + message

    @pytest.mark.parametrize("size", [64, 4096, 200_000])
    def test_one_octet_more_is_refused(self, size: int) -> None:
        """A header section over the bound raises, in whatever pieces it comes."""
        message = b"X-Long: " + b"a" * (MAX_HEADER_BYTES - 9) + b"\r\n\r\nbody\r\n"
        chunks = [message[i:i + size] for i in range(0, len(message), size)]
        with pytest.raises(HeaderSectionTooLarge):
            build(chunks)

    def test_an_endless_header_section_is_dropped_once_refused(self) -> None:
        """Folded lines forever: refused at the bound, nothing held or written."""
        blob = Blob()
        builder = MessageBuilder(blob, b"Received: x\r\n", hostname=HOST,
                                 add_submission_headers=False, max_header_bytes=1000)
        builder.write(b"X-Long: a")
        with pytest.raises(HeaderSectionTooLarge):
            for _ in range(1000):
                builder.write(b"\r\n\tb")
        assert builder.size == 0 and blob.data == b""

    async def test_a_generated_message_with_a_huge_header_is_an_intake_error(
        self, intake: Intake
    ) -> None:
        """The CLI/report door refuses it the same way, as a permanent 5.3.4."""
        data = b"X-Long: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\nbody\r\n"
        with pytest.raises(IntakeError) as caught:
            await intake.submit(envelope(ALICE), data)
        assert caught.value.permanent and caught.value.status == "5.3.4"

    def test_received_headers_are_counted_in_the_header_section_only(self) -> None:
        """A "Received:" line in the body is not a hop."""
        blob = Blob()
        builder = MessageBuilder(blob, b"", hostname=HOST, add_submission_headers=False)
        builder.write(b"Received: a\r\nReceived: b\r\n\r\nReceived: not a header\r\n")
        builder.finish()
        assert builder.received_count == 2


class TestReturnPath:
    def test_the_clients_return_path_fields_are_removed(self) -> None:
        """Any case, folded or not, anywhere in the header; the rest stays in order."""
        data = build([b"return-PATH: <forged@x.test>\r\nSubject: s\r\n",
                      b"Return-Path:\r\n <other@x.test>\r\nX-Return-Path: kept\r\n",
                      b"\r\nReturn-Path: in the body stays\r\n"], prefix=b"Received: r\r\n")
        assert data == (b"Received: r\r\nSubject: s\r\nX-Return-Path: kept\r\n"
                        b"\r\nReturn-Path: in the body stays\r\n")

    def test_a_header_of_only_return_path_leaves_the_body(self) -> None:
        """Nothing but the body is left when Return-Path was the whole header."""
        assert build([b"Return-Path: <a@b.test>\r\n\r\nbody\r\n"]) == b"\r\nbody\r\n"


class TestReceivedHeader:
    def test_names_client_server_protocol_id_and_recipient(self) -> None:
        """The trace header says who handed us what, how, and for whom (RFC 5321 §4.4)."""
        header = received_header(TRACE, when=0.0)
        assert header == (
            b"Received: from client.remote.test ([192.0.2.7])\r\n"
            b"\tby mx.example.test (postwarden) with ESMTPS id QID\r\n"
            b"\tfor <alice@example.test>;\r\n"
            b"\tThu, 01 Jan 1970 00:00:00 -0000\r\n"
        )

    def test_tls_details_and_no_recipient(self) -> None:
        """TLS info gets its own comment line; several recipients are not listed."""
        trace = TraceInfo("h", "2001:db8::1", HOST, "Q2", "ESMTPSA", None, "TLSv1.3")
        header = received_header(trace, when=0.0)
        assert b"([2001:db8::1])" in header
        assert b"with ESMTPSA id Q2\r\n\t(TLSv1.3);\r\n" in header
        assert b"for <" not in header

    def test_names_the_login_only_when_given(self) -> None:
        """received_header_shows_login hands the login over; then it gets a comment line."""
        trace = TraceInfo("h", "192.0.2.1", HOST, "Q", "ESMTPSA", None, "", ALICE)
        header = received_header(trace, when=0.0)
        assert header.startswith(b"Received: from h ([192.0.2.1])\r\n"
                                 b"\t(Authenticated sender: alice@example.test)\r\n\tby ")
        assert b"Authenticated" not in received_header(TRACE, when=0.0)

    def test_client_helo_cannot_inject_header_lines(self) -> None:
        """Control characters and spaces in HELO are neutralised, and it is bounded."""
        trace = TraceInfo("evil\r\nX-Injected: yes " + "x" * 500, "192.0.2.1", HOST, "Q",
                          "SMTP", None)
        header = received_header(trace, when=0.0)
        assert b"\r\nX-Injected" not in header
        assert header.count(b"\r\n") == 3
        first_line = header.split(b"\r\n")[0]
        assert len(first_line) < 200

    def test_header_parses_as_one_received_field(self) -> None:
        """The folded header is one field to a mail parser."""
        raw = received_header(TRACE, when=0.0) + b"Subject: x\r\n\r\n"
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert len(parsed.get_all("Received")) == 1


class TestFromFields:
    def test_every_from_field_unfolded_and_no_look_alikes(self) -> None:
        """Each From: field (any case, folded) is read; X-From and Resent-From are not From."""
        head = (b"X-From: x@evil.test\r\nResent-From: r@evil.test\r\n"
                b'FROM : "Bob"\r\n <bob@example.test>\r\nfrom:alice@example.test\r\n')
        assert from_fields(head) == ('"Bob" <bob@example.test>', "alice@example.test")

    def test_builder_reads_from_as_the_header_streams(self) -> None:
        """The From: is known once the header section has passed, whatever the chunking."""
        blob = Blob()
        builder = MessageBuilder(blob, b"", hostname=HOST, add_submission_headers=False)
        for chunk in (b"Subject: s\r\nFr", b"om: Bob <bob@", b"example.test>\r\n\r\nbody"):
            builder.write(chunk)
        assert builder.from_fields == ("Bob <bob@example.test>",)


class TestHeaderFromOwnership:
    async def test_unowned_display_only_and_garbage_from_are_refused(
        self, policy: RecipientPolicy, store: SqliteStore
    ) -> None:
        """Own address and an alias chain to it pass; another user, a bare name, junk do not."""
        store.directory.add_alias("sales@example.test", [ALICE])
        store.directory.add_alias("team@example.test", ["sales@example.test"])
        ok = ["Alice <ALICE@example.test>", "sales@example.test, <team@example.test>"]
        assert await policy.check_header_from(ALICE, ok) is None
        for bad in ([BOB], ["Alice"], ["<alice@example.test>, bob@example.test"], ["<@@>"]):
            refusal = await policy.check_header_from(ALICE, bad)
            assert refusal is not None and refusal.reply == R.FROM_NOT_OWNED, bad
        assert await policy.check_header_from(None, [BOB]) is None


class TestQueueId:
    def test_sixteen_alphanumeric_characters(self) -> None:
        """Safe as a file name and easy to grep in logs."""
        qid = new_queue_id()
        assert len(qid) == 16
        assert qid.isalnum() and qid.isascii()

    def test_unique_across_a_thousand_calls(self) -> None:
        """Back-to-back IDs never collide and keep the format."""
        ids = [new_queue_id() for _ in range(1000)]
        assert len(set(ids)) == 1000
        assert all(len(q) == 16 and q.isalnum() for q in ids)

    def test_ids_sort_in_time_order(self) -> None:
        """An ID made later sorts after an earlier one, so `ls` and logs read in order."""
        earlier = new_queue_id()
        later = [new_queue_id() for _ in range(200)]
        assert all(earlier[:11] <= q[:11] for q in later)  # 11 chars = 55 bits of time


class TestRecipientPolicy:
    async def test_local_existing_and_unknown_recipients(self, policy: RecipientPolicy) -> None:
        """The directory supplies the facts; the pure policy decides."""
        client = await policy.client_facts(ipaddress.ip_address("203.0.113.1"),
                                           ipaddress.ip_address("192.0.2.25"),
                                           tls=False, auth_user=None, now=1000.0)
        alice = await policy.check_recipient(client, parse_address("ALICE@example.test"))
        assert alice.reply == R.RECIPIENT_OK
        nobody = await policy.check_recipient(client, parse_address("nobody@example.test"))
        assert nobody.reply == R.UNKNOWN_USER
        refused = await policy.check_recipient(client, parse_address("x@remote.test"))
        assert refused.reply.code == R.RELAY_DENIED.code
        assert "Unable to relay for <x@remote.test>" in refused.reply.text

    async def test_own_hostname_is_local_with_postmaster_only(
        self, policy: RecipientPolicy
    ) -> None:
        """postmaster@<hostname> is the local postmaster; other names there do not exist."""
        postmaster = await policy.recipient_facts(parse_address(f"Postmaster@{HOST.upper()}."))
        assert (postmaster.domain_is_local, postmaster.mailbox_exists) == (True, True)
        nobody = await policy.recipient_facts(parse_address(f"nobody@{HOST}"))
        assert (nobody.domain_is_local, nobody.mailbox_exists) == (True, False)
        assert (await policy.canonical(parse_address(f"postmaster@{HOST}"))).key == (
            "postmaster@example.test")
        assert (await policy.resolve(parse_address(f"nobody@{HOST}"))).remote == ()

    async def test_address_literal_of_ours_is_never_local(self, policy: RecipientPolicy) -> None:
        """``user@[ip]`` is not a local domain, so it needs a relay rule."""
        facts = await policy.recipient_facts(parse_address("alice@[192.0.2.25]"))
        assert not facts.domain_is_local

    async def test_pop_login_is_read_for_pop_before_smtp(
        self, policy: RecipientPolicy, store: SqliteStore
    ) -> None:
        """A recent POP3/IMAP login from the client's address lets it relay."""
        store.directory.record_login("203.0.113.1", 1000.0)
        client = await policy.client_facts(ipaddress.ip_address("::ffff:203.0.113.1"),
                                           ipaddress.ip_address("192.0.2.25"),
                                           tls=False, auth_user=None, now=1060.0)
        assert client.seconds_since_pop_login == 60.0
        decision = await policy.check_recipient(client, parse_address("x@remote.test"))
        assert decision.rule == "pop_before_smtp"

    async def test_only_authenticated_or_relay_clients_are_vouched_for(
        self, policy: RecipientPolicy, store: SqliteStore
    ) -> None:
        """A stranger's envelope sender is not believed; a login or a relay rule vouches for it."""
        local = ipaddress.ip_address("192.0.2.25")

        async def facts(ip: str, user: str | None = None) -> bool:
            client = await policy.client_facts(ipaddress.ip_address(ip), local, tls=False,
                                               auth_user=user, now=1060.0)
            return policy.vouches_for_sender(client)

        store.directory.record_login("203.0.113.9", 1000.0)
        assert await facts("203.0.113.1") is False
        assert await facts("203.0.113.1", ALICE) is True
        assert await facts("203.0.113.9") is True  # POP-before-SMTP may relay

    async def test_user_owns_own_address_and_aliases_to_it(
        self, policy: RecipientPolicy, store: SqliteStore
    ) -> None:
        """sender_must_match_login allows the login's address and aliases that reach it."""
        store.directory.add_alias("sales@example.test", [ALICE])
        assert await policy.check_sender(ALICE, parse_address("Alice@example.test")) is None
        assert await policy.check_sender(ALICE, parse_address("sales@example.test")) is None
        refusal = await policy.check_sender(ALICE, parse_address(BOB))
        assert refusal is not None
        assert refusal.reply == R.SENDER_NOT_OWNED

    async def test_resolve_reports_loops(self, policy: RecipientPolicy, store: SqliteStore) -> None:
        """Expansion that comes back to an address raises AliasLoop naming the path."""
        store.directory.add_alias("a@example.test", ["b@example.test"])
        store.directory.add_alias("b@example.test", ["a@example.test"])
        loop = "a@example.test -> b@example.test -> a@example.test"
        with pytest.raises(AliasLoop, match=re.escape(loop)):
            await policy.resolve(parse_address("a@example.test"))

    async def test_deep_alias_chain_is_refused(
        self, policy: RecipientPolicy, store: SqliteStore
    ) -> None:
        """A chain deeper than the bound is treated as a loop."""
        for i in range(15):
            store.directory.add_alias(f"a{i}@example.test", [f"a{i + 1}@example.test"])
        store.directory.add_alias("a15@example.test", [ALICE])
        with pytest.raises(AliasLoop):
            await policy.resolve(parse_address("a0@example.test"))


class TestAppend:
    async def test_append_stores_the_exact_bytes_with_flags_and_date(
        self, intake: Intake, store: SqliteStore
    ) -> None:
        """IMAP APPEND: no trace header added, (UIDVALIDITY, UID) returned for APPENDUID."""
        raw = b"Subject: draft\r\n\r\nno final line break"
        writer = intake.open_append()
        writer.write(raw)
        appended = await intake.append(writer, ALICE, "Drafts", flags=Flag.DRAFT | Flag.SEEN,
                                       keywords=frozenset({"$Todo"}), internaldate=1234.0)
        box = store.mailboxes.get_mailbox(ALICE, "Drafts")
        assert box is not None
        assert (appended.uidvalidity, appended.uid) == (box.uidvalidity, 1)
        (meta,) = store.mailboxes.metadata(box.id, UidSet.all(), Field.SIZE)
        assert meta.blob is not None
        assert store.blobs.read_blob(meta.blob.name) == raw
        assert (meta.flags, meta.keywords, meta.internaldate) == (
            Flag.DRAFT | Flag.SEEN, {"$Todo"}, 1234.0)

    @pytest.mark.parametrize("limit", [None, 10])
    async def test_refused_append_leaves_no_file(
        self, intake: Intake, store: SqliteStore, limit: int | None
    ) -> None:
        """No such mailbox, or over quota: the store's error, and the file is gone."""
        store.mailboxes.set_quota(ALICE, limit)
        writer = intake.open_append()
        writer.write(MESSAGE)
        with pytest.raises(NotFound if limit is None else QuotaExceeded):
            await intake.append(writer, ALICE, "Nowhere" if limit is None else "INBOX")
        assert list(store.blobs.blob_dir.glob("*/*")) == []
