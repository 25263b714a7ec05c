"""THREAD=REFERENCES (RFC 5256) as a pure function: hand-derived trees for each step.

Messages are written as the parsed cache gives them (header fields already
unfolded and decoded); answers are compared as the wire shows them, without
the "* THREAD " prefix. UIDs are the sequence numbers unless a test says not.
"""

from __future__ import annotations

import datetime

from postwarden.protocol.imap import encoder
from postwarden.protocol.imap import responses as r
from postwarden.servers.imap_thread import ordered_subject, references, thread
from postwarden.storage.mailbox import Flag, MessageMeta

NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def at(minutes: int) -> str:
    """A Date field ``minutes`` after noon UTC."""
    return (NOON + datetime.timedelta(minutes=minutes)).strftime("%a, %d %b %Y %H:%M:%S +0000")


def msg(uid: int, mid: str | None = None, *, refs: str | None = None, irt: str | None = None,
        subject: str | None = None, date: str | None = None, arrived: int = 0) -> MessageMeta:
    """Message ``uid``; dated ``uid`` minutes after noon unless ``date`` says else
    ("" for none); ``arrived`` is its INTERNALDATE in minutes after noon."""
    fields = {"message-id": f"<{mid}@x>" if mid else None, "references": refs,
              "in-reply-to": irt, "subject": f"s{uid}" if subject is None else subject,
              "date": at(uid) if date is None else date or None}
    headers = tuple((name, value) for name, value in fields.items() if value is not None)
    internaldate = (NOON + datetime.timedelta(minutes=arrived)).timestamp()
    return MessageMeta(uid, Flag(0), frozenset(), 1, internaldate, None, headers)


def wire(threads: tuple[r.ThreadTree, ...]) -> str:
    line = encoder.untagged(r.ThreadData(threads))
    return line.removeprefix(b"* THREAD").strip().decode()


def refs_of(*metas: MessageMeta) -> str:
    return wire(references(metas, lambda uid: uid))


class TestLinking:
    def test_a_plain_chain(self) -> None:
        """Each message refers to all before it: one list, oldest first."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x>"),
                       msg(3, "c", refs="<a@x> <b@x>"),
                       msg(4, "d", refs="<a@x> <b@x> <c@x>")) == "(1 2 3 4)"

    def test_two_replies_branch(self) -> None:
        """A message with two replies ends its list with theirs."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x>"), msg(3, "c", refs="<a@x>"),
                       msg(4, "d", refs="<a@x> <c@x>")) == "(1 (2)(3 4))"

    def test_in_reply_to_only(self) -> None:
        """Without References the first valid In-Reply-To id is the parent; a References
        field with no valid id counts as none; a valid one wins over In-Reply-To."""
        assert refs_of(msg(1, "a"), msg(2, "b", irt="<a@x>"),
                       msg(3, "c", refs="see earlier", irt="junk <b@x> <a@x>"),
                       msg(4, "d", refs="<a@x>", irt="<c@x>")) == "(1 (2 3)(4))"

    def test_quoted_message_ids_are_the_same_id(self) -> None:
        """<"a"@x> and <a@x> are one Message ID (the RFC's normalisation)."""
        first = msg(1, None)._replace(headers=(("message-id", '<"a"@x>'), ("subject", "s1")))
        assert refs_of(first, msg(2, "b", refs="<a@x>")) == "(1 2)"

    def test_message_ids_are_case_sensitive(self) -> None:
        """<A@x> is not <a@x>: a dummy parent, alone under the root, is dropped."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<A@x>")) == "(1)(2)"

    def test_a_link_from_an_earlier_reference_stays(self) -> None:
        """Step 1A: a truncated References (<x> <c>) does not move c from under b."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x>"), msg(3, "c", refs="<a@x> <b@x>"),
                       msg(4, "d", refs="<x@x> <c@x>")) == "(1 2 3 4)"

    def test_own_references_override_a_presumed_parent(self) -> None:
        """Step 1B: d was put under b by c's References; d's own says a."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x>"),
                       msg(3, "c", refs="<a@x> <b@x> <d@x>"),
                       msg(4, "d", refs="<a@x>")) == "(1 (2)(4 3))"

    def test_no_references_means_no_parent(self) -> None:
        """Step 1B: a message without references loses the parent others gave it."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x> <c@x>"),
                       msg(3, "c")) == "(1)(3 2)"


class TestLoops:
    def test_two_messages_referring_to_each_other(self) -> None:
        """a says b is its parent; b then says a: that link would close a loop, so b
        stays a's parent."""
        assert refs_of(msg(1, "a", refs="<b@x>"), msg(2, "b", refs="<a@x>")) == "(2 1)"

    def test_a_loop_through_three_messages(self) -> None:
        """c -> a -> b is linked; c's reference to b would close the ring and is refused."""
        assert refs_of(msg(1, "a", refs="<c@x>"), msg(2, "b", refs="<a@x>"),
                       msg(3, "c", refs="<b@x>")) == "(3 1 2)"

    def test_a_loop_inside_one_references_field(self) -> None:
        """<a> <b> <a>: b under a; a under b would be a loop; the message under a."""
        assert refs_of(msg(1, "a"), msg(2, "b"),
                       msg(3, "c", refs="<a@x> <b@x> <a@x>")) == "(1 (2)(3))"

    def test_a_message_referring_to_itself(self) -> None:
        """Its own id last in References: no parent, and the dummy before it goes."""
        assert refs_of(msg(1, "a", refs="<z@x> <a@x>")) == "(1)"


class TestMessageIds:
    def test_duplicate_message_ids(self) -> None:
        """Only the first message keeps a duplicated id; a reply goes under it; the
        second is a thread of its own."""
        assert refs_of(msg(1, "a"), msg(2, "a"), msg(3, "c", refs="<a@x>")) == "(1 3)(2)"

    def test_the_first_to_arrive_fills_a_dummy(self) -> None:
        """1 refers to a; 2 is a (and takes 1 under it); 3 is a again and stands alone."""
        assert refs_of(msg(1, "b", refs="<a@x>"), msg(2, "a"), msg(3, "a")) == "(2 1)(3)"

    def test_messages_without_message_id(self) -> None:
        """No Message-ID, or one that is not valid: each is its own message."""
        nameless = msg(2, None)._replace(headers=(("message-id", "<no-at-sign>"),
                                                  ("subject", "s2"), ("date", at(2))))
        assert refs_of(msg(1, None), nameless, msg(3, None)) == "(1)(2)(3)"


class TestDummies:
    def test_a_missing_parent_of_two_stays_as_a_dummy(self) -> None:
        """Two replies to a message not in the mailbox: ((1)(2))."""
        assert refs_of(msg(1, "b", refs="<x@x>"), msg(2, "c", refs="<x@x>")) == "((1)(2))"

    def test_a_missing_parent_of_one_is_dropped(self) -> None:
        """Its only child is promoted to the root."""
        assert refs_of(msg(1, "b", refs="<x@x>"), msg(2, "c")) == "(1)(2)"

    def test_a_missing_message_inside_a_thread(self) -> None:
        """a -> (m missing) -> c: c is promoted under a."""
        assert refs_of(msg(1, "a"), msg(2, "c", refs="<a@x> <m@x>")) == "(1 2)"

    def test_dummies_under_a_dummy(self) -> None:
        """x -> y -> 1 and x -> z -> 2: y and z give way, x keeps both."""
        assert refs_of(msg(1, "b", refs="<x@x> <y@x>"),
                       msg(2, "c", refs="<x@x> <z@x>")) == "((1)(2))"

    def test_a_dummy_with_one_dummy_child_of_two(self) -> None:
        """x -> y -> {1, 2}: one dummy is left at the root, holding both."""
        assert refs_of(msg(1, "b", refs="<x@x> <y@x>"),
                       msg(2, "c", refs="<x@x> <y@x>")) == "((1)(2))"


class TestSubjects:
    def test_reply_joins_the_original(self) -> None:
        """Unlinked "Re: plan" goes under "plan", even when it is older."""
        assert refs_of(msg(1, "a", subject="plan"), msg(2, "b", subject="Re: plan")) == "(1 2)"
        assert refs_of(msg(1, "a", subject="RE: plan"), msg(2, "b", subject="plan")) == "(2 1)"

    def test_forward_forms_are_replies(self) -> None:
        """"Fwd:", "(fwd)" and "[fwd: ...]" all mark a forward; subjects compare
        without case."""
        assert refs_of(msg(1, "a", subject="Plan"), msg(2, "b", subject="Fwd: plan"),
                       msg(3, "c", subject="PLAN (fwd)"),
                       msg(4, "d", subject="[Fwd: plan]")) == "(1 (2)(3)(4))"

    def test_two_originals_with_one_subject(self) -> None:
        """Neither is a reply: side by side under a new dummy; a later reply joins them."""
        assert refs_of(msg(1, "a", subject="plan"), msg(2, "b", subject="plan")) == "((1)(2))"
        assert refs_of(msg(1, "a", subject="plan"), msg(2, "b", subject="plan"),
                       msg(3, "c", subject="Re: plan")) == "((1)(2)(3))"

    def test_a_list_tag_is_not_a_reply(self) -> None:
        """"[list] plan" and "plan" are both originals."""
        assert refs_of(msg(1, "a", subject="[list] plan"),
                       msg(2, "b", subject="plan")) == "((1)(2))"

    def test_two_replies_without_the_original(self) -> None:
        """Both are replies: neither goes under the other."""
        assert refs_of(msg(1, "a", subject="Re: plan"),
                       msg(2, "b", subject="Re: plan")) == "((1)(2))"

    def test_a_dummy_root_wins_the_subject(self) -> None:
        """Two replies to a missing message form a dummy; the original, alone, joins it
        as a sibling rather than taking the dummy under it."""
        assert refs_of(msg(1, "b", refs="<x@x>", subject="Re: plan"),
                       msg(2, "c", refs="<x@x>", subject="Re: plan"),
                       msg(3, "a", subject="plan")) == "((1)(2)(3))"

    def test_two_dummies_merge(self) -> None:
        """Dummies x and y of one subject: their children become siblings."""
        assert refs_of(msg(1, "b", refs="<x@x>", subject="plan"),
                       msg(2, "c", refs="<x@x>", subject="Re: plan"),
                       msg(3, "d", refs="<y@x>", subject="Re: plan"),
                       msg(4, "e", refs="<y@x>", subject="Re: Re: plan")) == "((1)(2)(3)(4))"

    def test_a_dummys_subject_is_its_first_childs(self) -> None:
        """The dummy's earliest child says "other": "plan" does not join it."""
        assert refs_of(msg(1, "b", refs="<x@x>", subject="other"),
                       msg(2, "c", refs="<x@x>", subject="plan"),
                       msg(3, "a", subject="Re: plan")) == "((1)(2))(3)"

    def test_only_roots_are_gathered(self) -> None:
        """A reply inside a thread does not pull in a root of its subject."""
        assert refs_of(msg(1, "a", subject="one"), msg(2, "b", refs="<a@x>", subject="plan"),
                       msg(3, "c", subject="Re: plan")) == "(1 2)(3)"

    def test_empty_subjects_are_not_gathered(self) -> None:
        """An empty base subject ("", "Re:") is never merged."""
        assert refs_of(msg(1, "a", subject=""), msg(2, "b", subject="Re:"),
                       msg(3, "c", subject="")) == "(1)(2)(3)"


class TestDates:
    def test_siblings_by_sent_date_ties_by_sequence(self) -> None:
        """Replies 3 and 4 share a date (in different zones) and come before 2."""
        assert refs_of(msg(1, "a"), msg(2, "b", refs="<a@x>", date=at(9)),
                       msg(3, "c", refs="<a@x>", date=at(5)),
                       msg(4, "d", refs="<a@x>",
                           date="Mon, 30 Nov 2026 07:05:00 -0500")) == "(1 (3)(4)(2))"

    def test_threads_by_their_first_message_and_a_dummy_by_its_first_child(self) -> None:
        """A dummy with children at 12:01 and 12:30 sorts before a thread at 12:10;
        a reply's date does not move its thread."""
        assert refs_of(msg(1, "b", refs="<x@x>", date=at(30)),
                       msg(2, "c", refs="<x@x>", date=at(1)),
                       msg(3, "d", date=at(10)), msg(4, "e", date=at(20), refs="<d@x>"),
                       msg(5, "f", date=at(0), refs="<d@x>")) == "((2)(1))(3 (5)(4))"

    def test_messages_without_a_usable_date_sort_by_arrival(self) -> None:
        """No Date, or an unreadable one: INTERNALDATE is the sent date."""
        assert refs_of(msg(1, "a", date=at(0)),
                       msg(2, "b", refs="<a@x>", date="", arrived=30),
                       msg(3, "c", refs="<a@x>", date=at(20)),
                       msg(4, "d", refs="<a@x>", date="not a date", arrived=10)
                       ) == "(1 (4)(3)(2))"

    def test_sequence_numbers_or_uids(self) -> None:
        """THREAD shows sequence numbers, UID THREAD the UIDs; ties break on the order
        in the mailbox either way."""
        metas = (msg(10, "a", date=at(0)), msg(20, "b", refs="<a@x>", date=at(5)),
                 msg(30, "c", refs="<a@x>", date=at(5)))
        sequence = {10: 1, 20: 2, 30: 3}
        assert wire(thread("REFERENCES", metas, sequence.__getitem__)) == "(1 (2)(3))"
        assert wire(thread("references", metas, lambda uid: uid)) == "(10 (20)(30))"


class TestDepth:
    def test_a_references_chain_thousands_deep(self) -> None:
        """5,000 ids in one References field: no recursion limit, one message left."""
        chain = " ".join(f"<m{n}@x>" for n in range(5000))
        assert refs_of(msg(1, "a", refs=chain)) == "(1)"

    def test_a_reply_chain_thousands_deep(self) -> None:
        """3,000 messages each replying to the one before: one flat list."""
        metas = [msg(1, "m1")] + [msg(n, f"m{n}", irt=f"<m{n - 1}@x>") for n in range(2, 3001)]
        assert refs_of(*metas) == "(" + " ".join(map(str, range(1, 3001))) + ")"

    def test_branches_thousands_deep(self) -> None:
        """Each message has a reply with replies of its own and a leaf: nested 2,000 deep."""
        metas = [msg(1, "m1")]
        for n in range(1, 2001):
            metas += [msg(2 * n, f"m{2 * n}", irt=f"<m{2 * n - 1}@x>"),
                      msg(2 * n + 1, f"m{2 * n + 1}", irt=f"<m{2 * n - 1}@x>")]
        text = refs_of(*metas)
        assert text.startswith("(1 (2)(3 (4)(5 (6)(7 ") and text.endswith(
            "(4000)(4001" + ")" * 2001)


class TestOrderedSubject:
    def test_groups_by_base_subject_without_case(self) -> None:
        """ORDEREDSUBJECT: the first message, the rest its children; threads by date."""
        metas = (msg(1, subject="Plan"), msg(2, subject="other"), msg(3, subject="re: PLAN"),
                 msg(4, subject="Re: plan", date=at(0)))
        assert wire(ordered_subject(metas, lambda uid: uid)) == "(4 (1)(3))(2)"
