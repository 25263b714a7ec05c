"""The advertised IMAP extensions over a real socket, answers checked against their RFCs:
LIST-EXTENDED (5258), LIST-STATUS (5819), SPECIAL-USE and CREATE-SPECIAL-USE (6154),
QUOTA (9208), BINARY (3516), ESEARCH (4731), SEARCHRES (5182), UIDPLUS's UID EXPUNGE
(4315), CLOSE (9051 §6.4.1) and COMPRESS (4978) against an over-limit command.

Raw lines rather than imaplib's parsed results: imaplib has no verb for most of these,
and the exact wording of each response is what the RFCs pin down.
"""

from __future__ import annotations

import re
import zlib
from email.message import EmailMessage
from typing import BinaryIO

from e2e.imap_fixtures import IMAPWorld, imap_world, raw_login

__all__ = ["imap_world"]

_LITERAL = re.compile(rb"~?\{(\d+)\}\r\n$")


class Session:
    """One logged-in plain socket; ``run`` sends a command and returns every line of
    the answer (literals spliced in, CRLF dropped), the tagged completion last."""

    def __init__(self, world: IMAPWorld, account: str) -> None:
        self.sock, self.reader, answer = raw_login((world.host, world.port), account)
        assert answer.startswith(b"a OK"), answer

    def run(self, tag: str, command: bytes | str) -> list[bytes]:
        data = command.encode() if isinstance(command, str) else command
        self.sock.sendall(tag.encode() + b" " + data + b"\r\n")
        return read_answer(self.reader, tag)

    def close(self) -> None:
        self.sock.close()


def read_answer(reader: BinaryIO, tag: str) -> list[bytes]:
    lines: list[bytes] = []
    line = b""
    for _ in range(100_000):
        chunk = reader.readline()
        assert chunk, lines
        line += chunk
        literal = _LITERAL.search(chunk)
        if literal:
            line += reader.read(int(literal.group(1)))
            continue
        lines.append(line.removesuffix(b"\r\n"))
        if line.startswith(tag.encode() + b" "):
            return lines
        line = b""
    raise AssertionError("no tagged answer")


def mime_with_attachment(payload: bytes) -> bytes:
    """A two-part message whose second part is base64 (for BINARY)."""
    message = EmailMessage()
    message["From"] = "someone@remote.example"
    message["Subject"] = "binary"
    message.set_content("plain words\n")
    message.add_attachment(payload, maintype="application", subtype="octet-stream",
                           filename="blob.bin")
    return message.as_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


def append(session: Session, tag: str, message: bytes, mailbox: str = "INBOX") -> bytes:
    """APPEND with a LITERAL+ literal; the tagged answer."""
    return session.run(tag, f"{mailbox} {{{len(message)}+}}\r\n".encode()
                       .join([b"APPEND ", message]))[-1]


def with_messages(world: IMAPWorld, *subjects: str) -> tuple[str, Session]:
    account = world.new_account()
    for subject in subjects:
        world.deliver(account, subject=subject)
    session = Session(world, account)
    assert session.run("s", "SELECT INBOX")[-1].startswith(b"s OK")
    return account, session


class TestListExtended:
    def test_subscribed_selection(self, imap_world: IMAPWorld) -> None:
        """RFC 5258 §3.1: LIST (SUBSCRIBED) lists only subscribed names, each with
        \\Subscribed, and a subscribed name that no longer exists with \\NonExistent."""
        session = Session(imap_world, imap_world.new_account())
        for tag, command in (("b", "CREATE Kept"), ("c", "CREATE Gone"), ("d", "SUBSCRIBE Kept"),
                             ("e", "SUBSCRIBE Gone"), ("f", "DELETE Gone")):
            assert session.run(tag, command)[-1].startswith(tag.encode() + b" OK")
        lines = session.run("g", 'LIST (SUBSCRIBED) "" "*"')
        assert lines[-1].startswith(b"g OK")
        by_name = {line.rsplit(b" ", 1)[-1].strip(b'"'): line for line in lines[:-1]}
        assert b"Kept" in by_name and b"Gone" in by_name, lines
        assert re.match(rb"\* LIST \([^)]*\\Subscribed", by_name[b"Kept"]), lines
        assert b"\\NonExistent" in by_name[b"Gone"] and b"\\Subscribed" in by_name[b"Gone"]
        assert b"\\NonExistent" not in by_name[b"Kept"]
        assert all(b"\\Subscribed" in line for line in lines[:-1])
        session.close()

    def test_recursivematch_names_the_parent_of_a_subscribed_child(
            self, imap_world: IMAPWorld) -> None:
        """RFC 5258 §3.5: LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" lists an unsubscribed
        parent whose child is subscribed, with ("CHILDINFO" ("SUBSCRIBED")) and without
        \\Subscribed; "*" reaches the child itself, so no CHILDINFO there."""
        session = Session(imap_world, imap_world.new_account())
        for tag, command in (("b", "CREATE Par/Kid"), ("c", "SUBSCRIBE Par/Kid")):
            assert session.run(tag, command)[-1].startswith(tag.encode() + b" OK")
        lines = session.run("d", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        assert b'* LIST (\\HasChildren) "/" Par ("CHILDINFO" ("SUBSCRIBED"))' in lines, lines
        assert not any(b"Par/Kid" in line for line in lines)
        lines = session.run("e", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "*"')
        assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Par/Kid' in lines, lines
        assert not any(b"CHILDINFO" in line for line in lines)
        session.close()

    def test_recursivematch_names_a_parent_that_does_not_exist(
            self, imap_world: IMAPWorld) -> None:
        """RFC 5258 §3.4: a subscribed Ghost/Kid whose parent Ghost exists nowhere (neither
        mailbox nor subscription): "%" still lists Ghost, \\NonExistent, with CHILDINFO."""
        session = Session(imap_world, imap_world.new_account())
        assert session.run("b", "SUBSCRIBE Ghost/Kid")[-1].startswith(b"b OK")
        lines = session.run("c", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        assert lines[-1].startswith(b"c OK")
        (ghost,) = [line for line in lines if line.startswith(b"* LIST") and b" Ghost" in line]
        assert b"\\NonExistent" in ghost and b"\\Subscribed" not in ghost, ghost
        assert ghost.endswith(b'"/" Ghost ("CHILDINFO" ("SUBSCRIBED"))'), ghost
        lines = session.run("d", 'LIST (SUBSCRIBED) "" "%"')  # without RECURSIVEMATCH: not
        assert not any(b"Ghost" in line for line in lines), lines
        session.close()

    def test_new_mail_is_recent_in_one_session_only(self, imap_world: IMAPWorld) -> None:
        """RFC 3501 §2.3.2: A has INBOX selected when a message arrives, so A's NOOP
        reports it \\Recent; B, selecting it afterwards, gets 0 RECENT and no \\Recent."""
        account = imap_world.new_account()
        a, b = Session(imap_world, account), Session(imap_world, account)
        assert a.run("b", "SELECT INBOX")[-1].startswith(b"b OK")
        imap_world.deliver(account)  # committed before SMTP's 250; NOOP asks the store
        lines = a.run("c", "NOOP")
        assert b"* 1 EXISTS" in lines and b"* 1 RECENT" in lines, lines
        lines = b.run("d", "SELECT INBOX")
        assert b"* 1 EXISTS" in lines and b"* 0 RECENT" in lines, lines
        assert b"\\Recent" not in b.run("e", "FETCH 1 FLAGS")[0]
        assert b"\\Recent" in a.run("f", "FETCH 1 FLAGS")[0]
        imap_world.deliver(account)  # now both are selected: the first to look takes it
        lines = b.run("g", "NOOP")
        assert b"* 2 EXISTS" in lines and b"* 1 RECENT" in lines, lines
        lines = a.run("h", "NOOP")
        assert b"* 2 EXISTS" in lines and b"* 1 RECENT" in lines, lines
        assert b"\\Recent" not in a.run("i", "FETCH 2 FLAGS")[0]
        a.close()
        b.close()

    def test_return_children_and_special_use(self, imap_world: IMAPWorld) -> None:
        """RETURN (CHILDREN SPECIAL-USE): \\HasChildren / \\HasNoChildren on every name and
        the use attributes (RFC 6154 §2) on the special mailboxes."""
        session = Session(imap_world, imap_world.new_account())
        delimiter = session.run("b", 'LIST "" ""')[0].split(b" ")[-2].strip(b'"').decode()
        for tag, name in (("c", "Projects"), ("d", f"Projects{delimiter}Alpha")):
            assert session.run(tag, f"CREATE {name}")[-1].startswith(tag.encode() + b" OK")
        lines = session.run("e", 'LIST "" "*" RETURN (CHILDREN SPECIAL-USE)')
        assert lines[-1].startswith(b"e OK")
        by_name = {line.rsplit(b" ", 1)[-1].strip(b'"'): line for line in lines[:-1]}
        assert b"\\HasChildren" in by_name[b"Projects"]
        assert b"\\HasNoChildren" in by_name[f"Projects{delimiter}Alpha".encode()]
        assert all(b"\\HasChildren" in line or b"\\HasNoChildren" in line
                   for line in lines[:-1]), lines
        for use in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
            assert f"\\{use}".encode() in by_name[use.encode()], lines
        assert b"\\Sent" not in by_name[b"Projects"]
        session.close()

    def test_special_use_selection(self, imap_world: IMAPWorld) -> None:
        """RFC 6154 §3: LIST (SPECIAL-USE) lists only the mailboxes that have a use."""
        session = Session(imap_world, imap_world.new_account())
        assert session.run("b", "CREATE Plain")[-1].startswith(b"b OK")
        lines = session.run("c", 'LIST (SPECIAL-USE) "" "*"')
        assert lines[-1].startswith(b"c OK")
        names = {line.rsplit(b" ", 1)[-1].strip(b'"') for line in lines[:-1]}
        assert names == {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}, lines
        session.close()


class TestListStatus:
    def test_status_follows_each_list_line(self, imap_world: IMAPWorld) -> None:
        """RFC 5819: RETURN (STATUS (MESSAGES UIDNEXT)) gives a STATUS right after the
        LIST line of each selectable mailbox matched."""
        _, session = with_messages(imap_world, "one", "two")
        lines = session.run("b", 'LIST "" "INBOX" RETURN (STATUS (MESSAGES UIDNEXT))')
        assert lines[-1].startswith(b"b OK")
        assert re.fullmatch(rb'\* LIST \([^)]*\) "." INBOX', lines[0]), lines
        assert lines[1] == b"* STATUS INBOX (MESSAGES 2 UIDNEXT 3)", lines
        assert len(lines) == 3
        lines = session.run("c", 'LIST "" "*" RETURN (STATUS (MESSAGES))')
        statuses = [line for line in lines if line.startswith(b"* STATUS")]
        listed = [line for line in lines if line.startswith(b"* LIST")]
        assert len(statuses) == len(listed) >= 6, lines
        assert b"* STATUS Trash (MESSAGES 0)" in statuses
        session.close()


class TestQuota:
    def test_getquotaroot_and_getquota(self, imap_world: IMAPWorld) -> None:
        """RFC 9208 §4.3: GETQUOTAROOT names the root and its STORAGE usage and limit in
        KiB; GETQUOTA "" gives the same QUOTA; an unknown root is NO."""
        account, session = with_messages(imap_world, "weighty")
        shown = imap_world.server.cli("user", "quota", account, "102400")
        assert shown.returncode == 0, shown.stderr
        used = int(re.search(r"(\d+) octets", shown.stdout).group(1))  # type: ignore[union-attr]
        quota = f'* QUOTA "" (STORAGE {(used + 1023) // 1024} 100)'.encode()
        lines = session.run("b", "GETQUOTAROOT INBOX")
        assert lines[:2] == [b'* QUOTAROOT INBOX ""', quota], lines
        assert lines[2].startswith(b"b OK") and len(lines) == 3
        lines = session.run("c", 'GETQUOTA ""')
        assert lines[0] == quota and lines[1].startswith(b"c OK"), lines
        assert session.run("d", 'GETQUOTA "elsewhere"')[-1].startswith(b"d NO")
        assert session.run("e", "GETQUOTAROOT NoSuchBox")[-1].startswith(b"e NO")
        session.close()

    def test_append_over_quota(self, imap_world: IMAPWorld) -> None:
        """RFC 9208 §5: an APPEND that would pass the limit is NO [OVERQUOTA] before the
        literal is asked for; with LITERAL+ the octets are read and dropped, and the
        session goes on; the mailbox is unchanged."""
        account, session = with_messages(imap_world, "first")
        assert imap_world.server.cli("user", "quota", account, "2000").returncode == 0
        message = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
        session.sock.sendall(f"b APPEND INBOX {{{len(message)}}}\r\n".encode())
        assert session.reader.readline().startswith(b"b NO [OVERQUOTA]")
        assert append(session, "c", message).startswith(b"c NO [OVERQUOTA]")
        assert session.run("d", "NOOP")[-1].startswith(b"d OK")
        assert session.run("e", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)"
        small = b"Subject: small\r\n\r\nfits\r\n"
        assert append(session, "f", small).startswith(b"f OK [APPENDUID")
        session.close()


class TestBinary:
    PAYLOAD = bytes(range(256)) * 4 + b"\x00end"

    def test_binary_decodes_the_base64_part(self, imap_world: IMAPWorld) -> None:
        """RFC 3516: BINARY.PEEK[2] is the decoded octets (a literal8 since they hold
        NUL), BINARY.SIZE[2] their count; BINARY[1] of a 7bit part is its text; BINARY[]
        is the whole message as stored."""
        session = Session(imap_world, imap_world.new_account())
        message = mime_with_attachment(self.PAYLOAD)
        assert append(session, "b", message).startswith(b"b OK")
        assert session.run("c", "SELECT INBOX")[-1].startswith(b"c OK")
        lines = session.run("d", "FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
        assert lines[-1].startswith(b"d OK") and len(lines) == 2, lines
        expected = (b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(self.PAYLOAD) + self.PAYLOAD
                    + b" BINARY.SIZE[2] %d)" % len(self.PAYLOAD))
        assert lines[0] == expected
        lines = session.run("e", "FETCH 1 (BINARY.PEEK[1])")
        assert lines[0].endswith(b"plain words\r\n)"), lines
        lines = session.run("f", "FETCH 1 (BINARY.PEEK[] BINARY.SIZE[])")
        assert lines[-1].startswith(b"f OK"), lines
        assert message in lines[0] and b"BINARY.SIZE[] %d" % len(message) in lines[0]
        assert b"\\Seen" not in session.run("g", "FETCH 1 (FLAGS)")[0]  # .PEEK
        session.close()

    def test_unknown_encoding_is_unknown_cte(self, imap_world: IMAPWorld) -> None:
        """RFC 3516 §4.3: a transfer encoding the server cannot decode is NO [UNKNOWN-CTE]."""
        session = Session(imap_world, imap_world.new_account())
        message = (b"Subject: odd\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
                   b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n")
        assert append(session, "b", message).startswith(b"b OK")
        assert session.run("c", "SELECT INBOX")[-1].startswith(b"c OK")
        assert session.run("d", "FETCH 1 (BINARY.PEEK[1])")[-1].startswith(b"d NO [UNKNOWN-CTE]")
        session.close()


class TestESearch:
    def test_return_options(self, imap_world: IMAPWorld) -> None:
        """RFC 4731 §3.1: MIN, MAX, COUNT and ALL in one ESEARCH tagged with the command's
        tag; UID SEARCH adds UID; no match leaves out MIN, MAX and ALL but keeps COUNT 0."""
        _, session = with_messages(imap_world, "a", "b", "c", "d", "e")
        lines = session.run("b", "SEARCH RETURN (MIN MAX COUNT ALL) 2:4,5")
        assert lines[0] == b'* ESEARCH (TAG "b") MIN 2 MAX 5 COUNT 4 ALL 2:5', lines
        assert lines[1].startswith(b"b OK")
        lines = session.run("c", "UID SEARCH RETURN (MIN COUNT) SUBJECT c")
        assert lines[0] == b'* ESEARCH (TAG "c") UID MIN 3 COUNT 1', lines
        lines = session.run("d", "SEARCH RETURN () ALL")
        assert lines[0] == b'* ESEARCH (TAG "d") ALL 1:5', lines
        lines = session.run("e", "SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT nowhere")
        assert lines[0] == b'* ESEARCH (TAG "e") COUNT 0', lines
        session.close()

    def test_searchres_save_then_fetch_dollar(self, imap_world: IMAPWorld) -> None:
        """RFC 5182: RETURN (SAVE) alone answers no ESEARCH; $ then names the saved set
        in FETCH and UID SEARCH; with SAVE MIN only the minimum is saved."""
        _, session = with_messages(imap_world, "apple", "pear", "apple pie")
        lines = session.run("b", "SEARCH RETURN (SAVE) SUBJECT apple")
        assert lines == [lines[-1]] and lines[-1].startswith(b"b OK"), lines
        lines = session.run("c", "FETCH $ (UID)")
        assert lines[:2] == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"], lines
        assert session.run("d", "UID SEARCH UID $")[0] == b"* SEARCH 1 3"
        lines = session.run("e", "SEARCH RETURN (SAVE MIN) SUBJECT apple")
        assert lines[0] == b'* ESEARCH (TAG "e") MIN 1', lines
        lines = session.run("f", "FETCH $ (UID)")
        assert lines[0] == b"* 1 FETCH (UID 1)" and lines[1].startswith(b"f OK"), lines
        session.close()


class TestExpunge:
    def test_uid_expunge_removes_only_the_given_uids(self, imap_world: IMAPWorld) -> None:
        """RFC 4315 §2.1: UID EXPUNGE 2 removes message 2 only, though 1 and 3 are
        \\Deleted too; plain EXPUNGE then removes them."""
        _, session = with_messages(imap_world, "one", "two", "three")
        assert session.run("b", "STORE 1:3 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"b OK")
        lines = session.run("c", "UID EXPUNGE 2")
        assert lines[0] == b"* 2 EXPUNGE" and lines[1].startswith(b"c OK"), lines
        assert session.run("d", "UID SEARCH ALL")[0] == b"* SEARCH 1 3"
        lines = session.run("e", "EXPUNGE")
        assert lines[:2] == [b"* 1 EXPUNGE", b"* 1 EXPUNGE"], lines
        session.close()

    def test_close_expunges_silently(self, imap_world: IMAPWorld) -> None:
        """RFC 9051 §6.4.1: CLOSE removes \\Deleted messages and sends no EXPUNGE."""
        _, session = with_messages(imap_world, "keep", "drop")
        assert session.run("b", "STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"b OK")
        lines = session.run("c", "CLOSE")
        assert len(lines) == 1 and lines[0].startswith(b"c OK"), lines
        assert session.run("d", "STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)"
        session.close()


class TestCreateSpecialUse:
    def test_create_with_use(self, imap_world: IMAPWorld) -> None:
        """RFC 6154 §3: CREATE name (USE (\\Archive)) makes a mailbox LIST shows with
        \\Archive; an unknown use, even beside a known one, is NO [USEATTR] and creates
        nothing."""
        session = Session(imap_world, imap_world.new_account())
        assert session.run("b", "CREATE Old (USE (\\Archive))")[-1].startswith(b"b OK")
        lines = session.run("c", 'LIST "" "Old" RETURN (SPECIAL-USE)')
        assert re.fullmatch(rb'\* LIST \([^)]*\\Archive[^)]*\) "." Old', lines[0]), lines
        assert session.run("d", "CREATE Odd (USE (\\Bogus))")[-1].startswith(b"d NO [USEATTR]")
        lines = session.run("e", "CREATE Two (USE (\\Archive \\Bogus))")
        assert lines[-1].startswith(b"e NO [USEATTR]"), lines
        lines = session.run("f", 'LIST "" "Odd"')
        assert len(lines) == 1 and lines[0].startswith(b"f OK"), lines
        lines = session.run("g", 'LIST "" "Two"')
        assert len(lines) == 1 and lines[0].startswith(b"g OK"), lines
        session.close()


class TestCompressedLimits:
    def test_inflated_command_over_the_limit(self, imap_world: IMAPWorld) -> None:
        """RFC 4978 §7: the line limit applies to the inflated bytes. A 4 MB line that
        deflates to a few KB is BAD [TOOBIG] and the session goes on."""
        session = Session(imap_world, imap_world.new_account())
        assert session.run("b", "COMPRESS DEFLATE")[-1].startswith(b"b OK")
        deflate, inflate = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        command = b"c NOOP " + b"x" * 4_000_000 + b"\r\nd NOOP\r\n"
        squeezed = deflate.compress(command) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert len(squeezed) < 10_000
        session.sock.sendall(squeezed)
        received = b""
        for _ in range(1000):
            if b"d OK" in received:
                break
            chunk = session.sock.recv(65536)
            assert chunk, received
            received += inflate.decompress(chunk)
        lines = received.split(b"\r\n")
        assert lines[0].startswith(b"c BAD [TOOBIG]"), received
        assert lines[1].startswith(b"d OK"), received
        session.close()

