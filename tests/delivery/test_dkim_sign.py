"""DKIM signing: keys and their records, the signed header set, OpenDKIM's verdict, delivery."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import dkim
import dns.resolver
import pytest
from deliveryworld import SENDER, World, make_config, message
from dnsfake import DNSServer
from smtppeers import Peer

from postwarden.cli import main
from postwarden.delivery import dkimsign
from postwarden.delivery.dkimsign import DkimKey

NETNS_RUNNER = Path(__file__).with_name("opendkim_netns.py")
DOMAIN = "local.test"
DAY = 86400.0

# A message with the awkward parts: an 8-bit body, a long folded header,
# trailing whitespace on body lines and trailing empty lines, Cc and References.
AWKWARD = (
    "Received: from client.local.test by mx.local.test; Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    "From: =?utf-8?q?J=C3=BCrgen?= <jurgen@local.test>\r\n"
    "To: bob@remote.test,\r\n carol@remote.test\r\n"
    "Cc: dave@remote.test\r\n"
    "Subject: " + " ".join(["a long subject word"] * 60) + "\r\n\tand a folded tail\r\n"
    "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    "Message-ID: <awkward@local.test>\r\n"
    "References: <a@remote.test>\r\n <b@remote.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus Zürich   \r\n"
    "\ttab-indented line with trailing tab\t\r\n"
    "  \r\n"
    ".a line starting with a dot\r\n"
    "\r\n\r\n"
).encode()


def txt(key: DkimKey) -> str:
    """The key record as rdata text for the loopback DNS server."""
    return " ".join(f'"{s}"' for s in key.txt_strings())


def table_lookup(keys: list[DkimKey]) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc from a table of our keys (for checks that need no DNS server)."""
    records = {f"{k.selector}._domainkey.{k.domain}.": "".join(k.txt_strings()) for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode())
        return value.encode() if value is not None else None

    return lookup


def signing(keys: list[DkimKey]) -> list[dkimsign.SigningKey]:
    return [dkimsign.SigningKey(k, dkimsign.parse_private(k)) for k in keys]


def verify_all(signed: bytes, dnsfunc: Callable[..., bytes | None]) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of a message, top first."""
    d = dkim.DKIM(signed)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    verdicts = []
    for i in range(count):
        try:
            verdicts.append(bool(d.verify(idx=i, dnsfunc=dnsfunc)))
        except dkim.DKIMException:  # a body hash mismatch is raised, not returned
            verdicts.append(False)
    return verdicts


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, DkimKey]:
    now = time.time()
    return {alg: dkimsign.generate(tmp_path / "var", DOMAIN, None, alg, now)
            for alg in dkimsign.ALGORITHMS}


class TestKeys:
    def test_key_files_are_private_and_records_carry_the_public_key(
        self, tmp_path: Path, keys: dict[str, DkimKey]
    ) -> None:
        """Each key is a 0600 file; its TXT record names the key type and the public key."""
        for alg, key in keys.items():
            path = tmp_path / "var" / "dkim" / DOMAIN / f"{key.selector}.json"
            assert path.stat().st_mode & 0o777 == 0o600
            record = key.dns_record()
            assert record.startswith(f"{key.selector}._domainkey.{DOMAIN}. IN TXT (")
            kind = "ed25519" if alg.startswith("ed25519") else "rsa"
            assert "".join(key.txt_strings()) == f"v=DKIM1; k={kind}; p={key.public}"
            assert all(len(s) <= 255 for s in key.txt_strings())
        assert dkimsign.load_keys(tmp_path / "var", DOMAIN) == sorted(
            keys.values(), key=lambda k: (k.created, k.selector))

    def test_default_selectors_are_dated_and_never_reused(self) -> None:
        """pw + date + r/e; a taken name gets a number instead of clashing."""
        now = time.mktime((2026, 11, 30, 12, 0, 0, 0, 0, 0)) - time.timezone
        assert dkimsign.default_selector([], "rsa-sha256", now) == "pw20261130r"
        assert dkimsign.default_selector([], "ed25519-sha256", now) == "pw20261130e"
        taken = ["pw20261130r", "pw20261130r2"]
        assert dkimsign.default_selector(taken, "rsa-sha256", now) == "pw20261130r3"

    def test_the_newest_key_signs_only_after_the_rotation_delay(
        self, tmp_path: Path, keys: dict[str, DkimKey]
    ) -> None:
        """A new selector waits for its DNS record; then it takes over from the old one."""
        old = keys["rsa-sha256"]
        new = dkimsign.generate(tmp_path / "var", DOMAIN, "next", "rsa-sha256", old.created + 10)
        both = dkimsign.load_keys(tmp_path / "var", DOMAIN)
        soon = dkimsign.active_keys(both, old.created + 3600, 2 * DAY)
        assert old in soon and new not in soon and keys["ed25519-sha256"] in soon
        later = dkimsign.active_keys(both, new.created + 2 * DAY, 2 * DAY)
        assert new in later and old not in later


class TestCommandLine:
    @pytest.fixture
    def config(self, tmp_path: Path) -> str:
        path = tmp_path / "postwarden.toml"
        assert main(["-c", str(path), "init", "--domain", DOMAIN]) == 0
        return str(path)

    def test_generate_prints_the_record_and_show_lists_every_selector(
        self, config: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """generate prints the TXT record to publish; show prints them again, both selectors."""
        capsys.readouterr()
        assert main(["-c", config, "dkim", "generate", DOMAIN]) == 0
        rsa_record = capsys.readouterr().out.strip()
        assert "._domainkey.local.test. IN TXT (" in rsa_record and "k=rsa" in rsa_record
        assert main(["-c", config, "dkim", "generate", DOMAIN, "--selector", "Ed1",
                     "--algorithm", "ed25519-sha256"]) == 0
        ed_record = capsys.readouterr().out.strip()
        assert ed_record.startswith("ed1._domainkey.local.test. IN TXT (")
        assert main(["-c", config, "dkim", "show", DOMAIN]) == 0
        shown = capsys.readouterr().out.splitlines()
        assert rsa_record in shown and ed_record in shown
        assert sum(1 for line in shown if line.startswith(";") and "signing" in line) == 2

    @pytest.mark.parametrize(("args", "error"), [
        (["generate", "other.test"], "other.test is not a local domain"),
        (["generate", DOMAIN, "--algorithm", "rsa-sha1"], "bad algorithm 'rsa-sha1'"),
        (["generate", DOMAIN, "--selector", "a_b"], "bad selector 'a_b'"),
        (["generate", DOMAIN, "--selector", "../x"], "bad selector '../x'"),
        (["generate", "bad..domain"], "bad domain"),
        (["show", DOMAIN], "no DKIM keys for local.test"),
        (["remove", DOMAIN, "nosuch"], "no selector nosuch"),
    ])
    def test_bad_input_is_one_line(
        self, config: str, capsys: pytest.CaptureFixture[str], args: list[str], error: str
    ) -> None:
        """Unknown domain, bad algorithm or selector, nothing to show: one line, exit 2."""
        capsys.readouterr()
        assert main(["-c", config, "dkim", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("postwarden: error: ") and error in err
        assert err.count("\n") == 1

    def test_an_existing_selector_is_refused_and_kept(
        self, config: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """generate never overwrites a key; remove retires one."""
        assert main(["-c", config, "dkim", "generate", DOMAIN, "--selector", "s1"]) == 0
        first = capsys.readouterr().out
        assert main(["-c", config, "dkim", "generate", DOMAIN, "--selector", "s1"]) == 2
        assert "selector s1 already exists" in capsys.readouterr().err
        assert main(["-c", config, "dkim", "show", DOMAIN]) == 0
        assert first.strip() in capsys.readouterr().out
        assert main(["-c", config, "dkim", "remove", DOMAIN, "s1"]) == 0
        assert main(["-c", config, "dkim", "show", DOMAIN]) == 2


class TestSignature:
    def test_header_set_oversigns_from_and_signs_only_present_fields(self) -> None:
        """h= has From once more than it occurs, each other listed field as often as it occurs."""
        fields = dkimsign.signed_fields(AWKWARD)
        assert fields.count(b"from") == 2
        for name in (b"to", b"cc", b"subject", b"date", b"message-id", b"references",
                     b"mime-version", b"content-type", b"content-transfer-encoding"):
            assert fields.count(name) == 1
        assert b"received" not in fields and b"reply-to" not in fields

    def test_signatures_are_relaxed_and_verify_with_dkimpy(
        self, keys: dict[str, DkimKey]
    ) -> None:
        """Dual-signed: one signature per key type, c=relaxed/relaxed, both verify."""
        head = dkimsign.sign(AWKWARD, signing(list(keys.values())))
        assert head.count(b"DKIM-Signature:") == 2 and head.endswith(b"\r\n")
        assert b"c=relaxed/relaxed" in head
        assert verify_all(head + AWKWARD, table_lookup(list(keys.values()))) == [True, True]

    def test_a_changed_body_or_added_from_fails(self, keys: dict[str, DkimKey]) -> None:
        """The check above can fail: an edited body, or a From added in front, breaks it."""
        head = dkimsign.sign(AWKWARD, signing(list(keys.values())))
        lookup = table_lookup(list(keys.values()))
        edited = AWKWARD.replace("Zürich".encode(), b"Zurich")
        assert verify_all(head + edited, lookup) == [False, False]
        assert verify_all(head + b"From: mallory@evil.test\r\n" + AWKWARD, lookup) == [False, False]

    def test_parsed_keys_are_reused_until_a_key_file_changes(self, tmp_path: Path) -> None:
        """The cache serves unchanged files; a key another process adds or removes is seen."""
        data_dir = tmp_path / "var"
        first = dkimsign.generate(data_dir, DOMAIN, "one", "rsa-sha256", time.time() - DAY)
        signer = dkimsign.Signer(data_dir, 0)
        assert signer.keys(DOMAIN)[0] is signer.keys(DOMAIN)[0]  # parsed once
        assert signer.signature(AWKWARD)[1] == f"one._domainkey.{DOMAIN}"
        second = dkimsign.generate(data_dir, DOMAIN, "two", "rsa-sha256", time.time())
        head, used = signer.signature(AWKWARD)
        assert used == f"two._domainkey.{DOMAIN}"
        assert verify_all(head + AWKWARD, table_lookup([first, second])) == [True]
        assert dkimsign.remove(data_dir, DOMAIN, "two")
        assert signer.signature(AWKWARD)[1] == f"one._domainkey.{DOMAIN}"
        assert dkimsign.remove(data_dir, DOMAIN, "one")
        assert signer.signature(AWKWARD) == (b"", "")

    def test_author_domain_is_the_single_from_mailbox(self) -> None:
        """No From, two From fields or two mailboxes: no author domain, nothing to sign with."""
        assert dkimsign.author_domain(AWKWARD) == DOMAIN
        assert dkimsign.author_domain(b"From: A <a@B\xc3\xbcro.Test>\r\n\r\n") == "xn--bro-hoa.test"
        assert dkimsign.author_domain(b"To: x@y.test\r\n\r\nbody") is None
        assert dkimsign.author_domain(b"From: a@x.test\r\nFrom: b@x.test\r\n\r\n") is None
        assert dkimsign.author_domain(b"From: a@x.test, b@x.test\r\n\r\n") is None

    def test_rfc8463_example_verifies(self) -> None:
        """RFC 8463 A.3: both the Ed25519 and the RSA signature verify with dkimpy."""
        records = {
            "brisbane._domainkey.football.example.com.":
                "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            "test._domainkey.football.example.com.":
                "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
                "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
                "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
                "Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
        }

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            value = records.get(name.decode())
            return value.encode() if value is not None else None

        example = RFC8463_EXAMPLE.replace(b"\n", b"\r\n")
        assert verify_all(example, lookup) == [True, True]
        assert b"a=ed25519-sha256" in example.split(b"DKIM-Signature")[1]
        assert verify_all(example.replace(b"hungry", b"angry"), lookup) == [False, False]


RFC8463_EXAMPLE = b"""\
DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
"""


def _netns_available() -> str | None:
    """Why OpenDKIM cannot be run here, or None."""
    for tool in ("opendkim-testmsg", "unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: opendkim-tools, util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--map-root-user", "--net", "--mount", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        return f"no private network namespace: {probe.stderr.decode().strip()}"
    return None


def opendkim_verify(tmp_path: Path, keys: list[DkimKey],
                    messages: dict[str, bytes]) -> tuple[dict[str, dict[str, object]], list[str]]:
    """opendkim-testmsg's verdict per message, keys served by a loopback DNS server."""
    why = _netns_available()
    if why is not None:
        pytest.skip(why)
    tmp_path.mkdir(exist_ok=True)
    records = [[f"{k.selector}._domainkey.{k.domain}", "TXT", [txt(k)]] for k in keys]
    (tmp_path / "records.json").write_text(json.dumps(records))
    files = []
    for name, data in messages.items():
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    proc = subprocess.run(
        ["unshare", "--map-root-user", "--net", "--mount", sys.executable, str(NETNS_RUNNER),
         str(tmp_path / "records.json"), *files],
        capture_output=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    verdicts = {Path(line["file"]).name: line for line in lines if "file" in line}
    queries = [name for line in lines if "queries" in line for name, _ in line["queries"]]
    return verdicts, queries


class TestOpenDKIM:
    def test_opendkim_verifies_rsa_and_ed25519_signatures(
        self, tmp_path: Path, keys: dict[str, DkimKey]
    ) -> None:
        """Plain and awkward messages, each key type: OpenDKIM says good; edited copies: bad."""
        # libopendkim refuses a message without Date (RFC 5322 requires it; the
        # intake adds one to submitted mail), so the plain message gets one.
        plain = message(extra="Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n")
        messages = {}
        for alg, key in keys.items():
            for label, msg in (("plain", plain), ("awkward", AWKWARD)):
                signed = dkimsign.sign(msg, signing([key])) + msg
                messages[f"{alg}-{label}.eml"] = signed
                messages[f"{alg}-{label}-edited.eml"] = signed.replace(b"Hi there", b"Hi where")\
                    .replace("Zürich".encode(), b"Zurich")
        verdicts, queries = opendkim_verify(tmp_path, list(keys.values()), messages)
        for name in messages:
            wanted = 70 if "edited" in name else 0
            assert verdicts[name]["status"] == wanted, (name, verdicts[name])
        for key in keys.values():  # the keys really came from the DNS server
            assert f"{key.selector}._domainkey.{DOMAIN}" in queries


@pytest.fixture
async def sink_world(tmp_path: Path) -> AsyncIterator[tuple[World, Peer, DNSServer, list[DkimKey]]]:
    """A queue manager routing remote.test to a loopback SMTP sink, with both key types."""
    peer = Peer()
    port = await peer.start("127.0.0.1")
    cfg = make_config(tmp_path, routes=[{"domain": "remote.test", "to": f"127.0.0.1:{port}"}])
    now = time.time()
    made = [dkimsign.generate(cfg.data_dir, DOMAIN, None, alg, now)
            for alg in dkimsign.ALGORITHMS]
    dns_server = DNSServer({(f"{k.selector}._domainkey.{DOMAIN}", "TXT"): [txt(k)] for k in made})
    await dns_server.start()
    world = await World(tmp_path, cfg).start()
    yield world, peer, dns_server, made
    await world.stop()
    await dns_server.close()
    await peer.close()


def loopback_lookup(port: int) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc asking the loopback DNS server (run it off the event loop)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


class TestDelivery:
    async def test_delivered_mail_carries_signatures_that_verify(
        self, tmp_path: Path, sink_world: tuple[World, Peer, DNSServer, list[DkimKey]]
    ) -> None:
        """Submitted mail reaches the sink dual-signed; dkimpy and OpenDKIM verify it."""
        world, peer, dns_server, keys = sink_world
        await world.submit("bob@remote.test", data=AWKWARD)
        [tx] = await peer.wait_messages(1)
        assert tx.data.startswith(b"DKIM-Signature:")
        assert tx.data.count(b"DKIM-Signature:") == 2
        lookup = loopback_lookup(dns_server.port)
        assert await asyncio.to_thread(verify_all, tx.data, lookup) == [True, True]
        assert ("pw" in dns_server.queries[0][0]) and dns_server.queries[0][1] == "TXT"
        verdicts, _ = await asyncio.to_thread(
            opendkim_verify, tmp_path / "opendkim", keys, {"delivered.eml": tx.data})
        assert verdicts["delivered.eml"]["status"] == 0, verdicts

    async def test_mail_from_a_stranger_or_a_foreign_author_is_not_signed(
        self, sink_world: tuple[World, Peer, DNSServer, list[DkimKey]]
    ) -> None:
        """Only mail we vouch for, with a From in a domain that has keys, is signed."""
        world, peer, _dns, _keys = sink_world
        await world.submit("bob@remote.test", data=message("stranger"), trusted=False)
        foreign = message("foreign").replace(f"From: <{SENDER}>".encode(),
                                             b"From: <someone@elsewhere.test>")
        await world.submit("bob@remote.test", data=foreign)
        txs = await peer.wait_messages(2)
        assert all(b"DKIM-Signature" not in tx.data for tx in txs)
