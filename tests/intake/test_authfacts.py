"""Gathering the sender checks' facts: what happens when a step fails."""

from __future__ import annotations

import gc
import warnings

from delivery.dnsfake import DNSServer
from postwarden.config import AuthChecksConfig, HostPort
from postwarden.intake.authdns import AuthDNS
from postwarden.intake.authfacts import EnvelopeFacts, gather

# A signature whose key and DMARC record are cached: the steps run one after another.
MESSAGE = (b"DKIM-Signature: v=1; a=rsa-sha256; d=sig.test; s=sel; h=from; bh=AA==; b=AA==\r\n"
           b"From: a@sig.test\r\n\r\nbody\r\n")


class DirectoryDown(Exception):
    pass


async def failing_envelope() -> EnvelopeFacts:
    """The first step awaited, raising (as a directory lookup in it may)."""
    raise DirectoryDown("no answer from the directory")


async def never_local(domain: str) -> bool:
    return False


async def test_a_failing_step_leaves_no_coroutine_unawaited() -> None:
    """With every answer cached the steps run one after another; when the first one
    raises, the DKIM and DMARC steps are dropped cleanly (no "never awaited" warning)."""
    server = DNSServer({("sel._domainkey.sig.test", "TXT"): ['"v=DKIM1; p="'],
                        ("_dmarc.sig.test", "TXT"): ['"v=DMARC1; p=none"']})
    port = await server.start()
    try:
        dns = AuthDNS([HostPort("127.0.0.1", port)], 3, cache_size=100)
        await dns.txt("sel._domainkey.sig.test")
        await dns.txt("_dmarc.sig.test")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raised = False
            try:
                await gather(dns, AuthChecksConfig(), client_ip="192.0.2.1", helo="c.test",
                             mail_from="a@sig.test", message=MESSAGE, trusted="",
                             is_local=never_local, envelope=failing_envelope())
            except DirectoryDown:
                raised = True
            gc.collect()
        assert raised
        assert not [w for w in caught if "never awaited" in str(w.message)]
    finally:
        await server.close()
