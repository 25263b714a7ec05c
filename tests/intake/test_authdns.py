"""The sender checks' DNS cache: answers kept for their TTL, bounded, against a real DNS server."""

from __future__ import annotations

from delivery.dnsfake import DNSServer
from postwarden.config import HostPort
from postwarden.intake.authdns import AnswerCache, AuthDNS


def test_cache_forgets_expired_answers_and_stays_bounded() -> None:
    cache = AnswerCache(4)
    cache.put(("a.test", 16), 10.0, ["x"])
    assert cache.get(("a.test", 16), 9.0) == ["x"]
    assert cache.get(("a.test", 16), 10.0) is None  # expired
    for i in range(10):
        cache.put((f"n{i}.test", 16), 1e12, [i])
    assert len(cache._answers) <= 4 and cache.get(("n9.test", 16), 0.0) == [9]


async def test_a_repeated_question_is_answered_from_the_cache() -> None:
    """The second TXT lookup of a name never reaches the server; a missing name is asked
    again (the test server sends no SOA, so there is no negative TTL to honour)."""
    server = DNSServer({("spf.test", "TXT"): ['"v=spf1 -all"']})
    port = await server.start()
    try:
        dns = AuthDNS([HostPort("127.0.0.1", port)], 3, cache_size=100)
        for _ in range(3):
            assert await dns.txt("SPF.test.") == ["v=spf1 -all"]
            assert await dns.txt("missing.test") == []
        assert server.queries.count(("spf.test", "TXT")) == 1
        assert server.queries.count(("missing.test", "TXT")) == 3
    finally:
        await server.close()


async def test_has_txt_tells_which_answers_are_at_hand() -> None:
    """True only once every name's TXT answer is cached (so the checks may ask one after
    another without a round trip to overlap); an uncached name makes it False."""
    server = DNSServer({("spf.test", "TXT"): ['"v=spf1 -all"'],
                        ("_dmarc.spf.test", "TXT"): ['"v=DMARC1; p=none"']})
    port = await server.start()
    try:
        dns = AuthDNS([HostPort("127.0.0.1", port)], 3, cache_size=100)
        assert not dns.has_txt(["spf.test"])
        await dns.txt("spf.test")
        assert dns.has_txt(["SPF.test."])
        assert not dns.has_txt(["spf.test", "_dmarc.spf.test"])
        await dns.txt("_dmarc.spf.test")
        assert dns.has_txt(["spf.test", "_dmarc.spf.test"])
        await dns.txt("missing.test")  # no SOA from this server: not kept
        assert not dns.has_txt(["spf.test", "missing.test"])
    finally:
        await server.close()
