"""imaplib against a real server: login, LIST, SELECT, FETCH, SEARCH, STORE, COPY/MOVE,
APPEND, EXPUNGE, and two sessions seeing each other's changes."""

from __future__ import annotations

import imaplib
import re
import socket

import pytest

from e2e.imap_fixtures import TIMEOUT, IMAPWorld, imap_world
from serverproc import PASSWORD

__all__ = ["imap_world"]


def ok(result: tuple[str, list]) -> list:  # type: ignore[type-arg]
    status, data = result
    assert status == "OK", data
    return data


class TestLogin:
    def test_login_lists_the_special_use_mailboxes(self, imap_world: IMAPWorld) -> None:
        """A new account has INBOX, Sent, Drafts, Trash, Junk and Archive, with their uses."""
        client = imap_world.login(imap_world.new_account())
        lines = [line.decode() for line in ok(client.list())]
        names = {line.rsplit(" ", 1)[-1].strip('"') for line in lines}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= names
        assert any("\\Sent" in line and line.endswith("Sent") for line in lines)
        client.logout()

    def test_wrong_password_is_refused(self, imap_world: IMAPWorld) -> None:
        """A wrong password gets NO [AUTHENTICATIONFAILED]."""
        account = imap_world.new_account()
        client = imaplib.IMAP4(imap_world.host, imap_world.port, timeout=TIMEOUT)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(account, "wrong")
        client.logout()

    def test_imaps_login(self, imap_world: IMAPWorld) -> None:
        """The imaps port speaks TLS from the first byte."""
        account = imap_world.new_account()
        client = imaplib.IMAP4_SSL(imap_world.host, imap_world.tls_port,
                                   ssl_context=imap_world.tls_context(), timeout=TIMEOUT)
        ok(client.login(account, PASSWORD))
        client.logout()

    def test_starttls_then_login(self, imap_world: IMAPWorld) -> None:
        """STARTTLS on the imap port, then login over TLS."""
        account = imap_world.new_account()
        client = imaplib.IMAP4(imap_world.host, imap_world.port, timeout=TIMEOUT)
        ok(client.starttls(ssl_context=imap_world.tls_context()))
        ok(client.login(account, PASSWORD))
        client.logout()


class TestMessages:
    def test_select_fetch_and_search(self, imap_world: IMAPWorld) -> None:
        """Messages delivered over SMTP are fetched whole, in parts and by header."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="First apple", body="one banana\n")
        imap_world.deliver(account, subject="Second cherry", body="two dates\n")
        client = imap_world.login(account)
        assert ok(client.select("INBOX")) == [b"2"]
        data = ok(client.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        headers = [part[1] for part in data if isinstance(part, tuple)]
        assert headers == [b"Subject: First apple\r\n\r\n", b"Subject: Second cherry\r\n\r\n"]
        whole = ok(client.fetch("2", "(BODY.PEEK[])"))[0][1]
        assert b"Subject: Second cherry" in whole and whole.endswith(b"two dates\r\n")
        partial = ok(client.fetch("2", "(BODY.PEEK[TEXT]<0.3>)"))[0]
        assert partial.endswith(b'BODY[TEXT]<0> "two")'), partial  # short: a quoted string
        assert ok(client.search(None, "SUBJECT", "cherry")) == [b"2"]
        assert ok(client.uid("SEARCH", "UNSEEN")) == [b"1 2"]
        client.logout()

    def test_search_header_the_cache_does_not_keep(self, imap_world: IMAPWorld) -> None:
        """SEARCH HEADER X-Mailer reads the headers; NOT and OR combine it with the rest."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="one", X_Mailer="Pigeon 2.0")
        imap_world.deliver(account, subject="two", X_Mailer="Raven")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        assert ok(client.search(None, "HEADER", "X-Mailer", "pigeon")) == [b"1"]
        assert ok(client.search(None, "NOT", "HEADER", "X-Mailer", "pigeon")) == [b"2"]
        assert ok(client.search(None, "OR", "HEADER", "X-Mailer", "raven", "SUBJECT", "one")) \
            == [b"1 2"]
        client.logout()

    def test_unknown_search_charset_is_refused(self, imap_world: IMAPWorld) -> None:
        """SEARCH CHARSET x with an unknown x: NO [BADCHARSET (UTF-8 US-ASCII)]."""
        client = imap_world.login(imap_world.new_account())
        ok(client.select("INBOX"))
        typ, data = client.search("X-UNKNOWN", "ALL")
        assert typ == "NO" and b"BADCHARSET (UTF-8 US-ASCII)" in data[0]
        client.logout()

    def test_envelope_and_bodystructure(self, imap_world: IMAPWorld) -> None:
        """ENVELOPE and BODYSTRUCTURE come from the parsed cache."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="Structured")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        data = ok(client.fetch("1", "(ENVELOPE BODYSTRUCTURE)"))[0]
        assert b'"Structured"' in data
        assert b'((NIL NIL "someone" "remote.example"))' in data
        assert b'("TEXT" "PLAIN"' in data.upper()
        client.logout()

    def test_body_fetch_sets_seen_and_peek_does_not(self, imap_world: IMAPWorld) -> None:
        """BODY[] sets \\Seen, BODY.PEEK[] does not."""
        account = imap_world.new_account()
        imap_world.deliver(account)
        imap_world.deliver(account)
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        ok(client.fetch("1", "(BODY.PEEK[])"))
        ok(client.fetch("2", "(BODY[])"))
        assert ok(client.search(None, "SEEN")) == [b"2"]
        client.logout()

    def test_store_and_expunge(self, imap_world: IMAPWorld) -> None:
        """STORE +FLAGS answers the new flags; EXPUNGE removes \\Deleted messages."""
        account = imap_world.new_account()
        for n in range(3):
            imap_world.deliver(account, subject=f"m{n}")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        data = ok(client.store("2", "+FLAGS", "(\\Deleted $Important)"))
        assert b"\\Deleted" in data[0] and b"$Important" in data[0]
        assert ok(client.expunge()) == [b"2"]
        assert ok(client.search(None, "ALL")) == [b"1 2"]
        assert ok(client.uid("SEARCH", "ALL")) == [b"1 3"]
        client.logout()

    def test_copy_and_move_report_uids(self, imap_world: IMAPWorld) -> None:
        """COPY answers COPYUID; MOVE takes the message out of the source."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="keep")
        imap_world.deliver(account, subject="move")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        ok(client.copy("1", "Archive"))
        assert re.fullmatch(rb"\d+ 1 1", client.untagged_responses["COPYUID"][0])
        ok(client.uid("MOVE", "2", "Trash"))
        assert ok(client.search(None, "ALL")) == [b"1"]
        assert ok(client.select("Trash")) == [b"1"]
        subject = ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]
        assert subject.startswith(b"Subject: move")
        client.logout()

    def test_append_answers_appenduid(self, imap_world: IMAPWorld) -> None:
        """APPEND files the message with its flags and answers APPENDUID."""
        account = imap_world.new_account()
        client = imap_world.login(account)
        message = b"From: me@example.test\r\nSubject: draft\r\n\r\nhello\r\n"
        typ, data = client.append("Drafts", "(\\Draft)", None, message)
        assert typ == "OK"
        assert re.search(rb"APPENDUID \d+ 1", data[0])
        ok(client.select("Drafts"))
        fetched = ok(client.fetch("1", "(FLAGS BODY.PEEK[])"))[0]
        assert b"\\Draft" in fetched[0] and fetched[1] == message
        client.logout()

    def test_create_rename_delete(self, imap_world: IMAPWorld) -> None:
        """Mailboxes with hierarchy: CREATE, RENAME, DELETE and STATUS."""
        client = imap_world.login(imap_world.new_account())
        ok(client.create("Projects/2026"))
        ok(client.rename("Projects/2026", "Projects/Done"))
        status = ok(client.status("Projects/Done", "(MESSAGES UIDNEXT)"))[0]
        assert b"MESSAGES 0" in status
        names = b" ".join(ok(client.list('""', "Projects/*")))
        assert b"Projects/Done" in names and b"2026" not in names
        ok(client.delete("Projects/Done"))
        typ, _ = client.select("Projects/Done")
        assert typ == "NO"
        client.logout()


class TestSortAndThread:
    def test_sort_by_subject_and_reverse_size(self, imap_world: IMAPWorld) -> None:
        """SORT orders by base subject ("Re:" ignored), and REVERSE SIZE by size."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="Re: banana", body="x\n")
        imap_world.deliver(account, subject="apple", body="x" * 500 + "\n")
        imap_world.deliver(account, subject="cherry", body="x" * 100 + "\n")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        assert ok(client.sort("(SUBJECT)", "UTF-8", "ALL")) == [b"2 1 3"]
        assert ok(client.sort("(REVERSE SIZE)", "UTF-8", "ALL")) == [b"2 3 1"]
        client.logout()

    def test_sort_subject_ignores_case(self, imap_world: IMAPWorld) -> None:
        """SORT SUBJECT compares without case (RFC 5256 §1: I18NLEVEL=1's casemap): "apple" before
        "Banana" before "cherry", and "APPLE"/"apple" tie (then by sequence number)."""
        account = imap_world.new_account()
        for subject in ("cherry", "Banana", "apple", "Re: APPLE"):
            imap_world.deliver(account, subject=subject)
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        assert ok(client.sort("(SUBJECT)", "UTF-8", "ALL")) == [b"3 4 2 1"]
        assert ok(client.sort("(REVERSE SUBJECT)", "UTF-8", "ALL")) == [b"1 2 3 4"]
        client.logout()

    def test_thread_by_references_and_subject(self, imap_world: IMAPWorld) -> None:
        """THREAD REFERENCES links replies under their parent; ORDEREDSUBJECT groups
        by base subject."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="plan", Message_ID="<a@x>")
        imap_world.deliver(account, subject="other", Message_ID="<b@x>")
        imap_world.deliver(account, subject="Re: plan", Message_ID="<c@x>",
                           In_Reply_To="<a@x>", References="<a@x>")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        assert ok(client.thread("REFERENCES", "UTF-8", "ALL")) == [b"(1 3)(2)"]
        assert ok(client.thread("ORDEREDSUBJECT", "UTF-8", "ALL")) == [b"(1 3)(2)"]
        client.logout()

    def test_thread_references_over_the_wire(self, imap_world: IMAPWorld) -> None:
        """THREAD and UID THREAD REFERENCES UTF-8 ALL on mail sent over SMTP, with a
        message expunged first so sequence numbers and UIDs differ: replies linked
        by References / In-Reply-To whatever their subjects, siblings in date order,
        a reply to a message not in the mailbox under its original by subject, and
        two replies to a missing message side by side under a dummy."""
        account = imap_world.new_account()

        def send(subject: str, at: str, message_id: str, **headers: str) -> None:
            imap_world.deliver(account, subject=subject, Message_ID=message_id,
                               date=f"Mon, 30 Nov 2026 {at}:00 +0000", **headers)

        send("gone", "08:00", "<gone@x>")  # UID 1, expunged
        send("plan", "10:00", "<a@x>")  # UID 2
        send("Re: plan", "10:05", "<b@x>", References="<a@x>")
        send("Change of plan", "10:03", "<c@x>", In_Reply_To="<a@x>")
        send("lunch", "09:00", "<d@x>")  # UID 5
        send("Re: lunch", "09:30", "<e@x>", References="<missing@x>")
        send("Re: budget", "11:00", "<f@x>", References="<zz@x>")
        send("Re: budget", "11:05", "<g@x>", References="<zz@x>")
        send("Re: Change of plan", "10:04", "<h@x>", References="<a@x> <c@x>")  # UID 9
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        ok(client.store("1", "+FLAGS", "(\\Deleted)"))
        ok(client.expunge())
        threads = ok(client.thread("REFERENCES", "UTF-8", "ALL"))
        assert b"* THREAD " + threads[0] == b"* THREAD (4 5)(1 (3 8)(2))((6)(7))"
        uid_threads = ok(client.uid("THREAD", "REFERENCES", "UTF-8", "ALL"))
        assert b"* THREAD " + uid_threads[0] == b"* THREAD (5 6)(2 (4 9)(3))((7)(8))"
        assert ok(client.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "plan")) == [
            b"(2 (4 9)(3))"]
        client.logout()


    def test_bad_thread_commands_are_refused_and_the_session_goes_on(
            self, imap_world: IMAPWorld) -> None:
        """An unknown charset is NO [BADCHARSET], an unknown algorithm, a missing or an
        unknown search key BAD; none ends the session or disturbs a good THREAD."""
        account = imap_world.new_account()
        imap_world.deliver(account, subject="plan", Message_ID="<a@x>")
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        typ, data = client.thread("REFERENCES", "KOI8-R", "ALL")
        assert typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]")
        for args, why in ((("SPAGHETTI", "UTF-8", "ALL"), "Unknown THREAD algorithm"),
                          (("REFERENCES", "UTF-8"), "Expected search criteria"),
                          (("REFERENCES", "UTF-8", "BOGUS"), "Unknown search key")):
            with pytest.raises(imaplib.IMAP4.error, match=why):
                client.thread(*args)
        assert ok(client.thread("REFERENCES", "UTF-8", "ALL")) == [b"(1)"]
        client.logout()

class TestTwoSessions:
    def test_a_flag_set_in_one_session_shows_in_the_other(self, imap_world: IMAPWorld) -> None:
        """Session B hears of session A's STORE at its next NOOP."""
        account = imap_world.new_account()
        imap_world.deliver(account)
        a, b = imap_world.login(account), imap_world.login(account)
        ok(a.select("INBOX"))
        ok(b.select("INBOX"))
        ok(a.store("1", "+FLAGS", "(\\Flagged)"))
        ok(b.noop())
        fetches = b.untagged_responses.get("FETCH", [])
        assert any(b"\\Flagged" in f for f in fetches), fetches
        a.logout()
        b.logout()

    def test_idle_session_hears_smtp_mail(self, imap_world: IMAPWorld) -> None:
        """An IDLE session is told EXISTS when mail arrives over SMTP."""
        account = imap_world.new_account()
        imap_world.deliver(account)
        client = imap_world.login(account)
        ok(client.select("INBOX"))
        sock = client.socket()
        sock.sendall(b"i1 IDLE\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+")
        imap_world.deliver(account, subject="while idling")
        assert reader.readline() == b"* 2 EXISTS\r\n"
        sock.sendall(b"DONE\r\n")
        lines = [reader.readline() for _ in range(2)]
        assert lines[-1].startswith(b"i1 OK"), lines
        sock.close()


class TestBadInput:
    def test_garbage_gets_bad_and_the_session_goes_on(self, imap_world: IMAPWorld) -> None:
        """A malformed command gets BAD; the next good one still works."""
        with socket.create_connection((imap_world.host, imap_world.port), TIMEOUT) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"* OK")
            sock.sendall(b"a1 FROB\r\na2 SELECT INBOX\r\na3 NOOP\r\n")
            assert reader.readline().startswith(b"a1 BAD")
            assert reader.readline().startswith(b"a2 BAD")  # not logged in
            assert reader.readline().startswith(b"a3 OK")
