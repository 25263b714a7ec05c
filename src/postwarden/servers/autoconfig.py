"""Client autoconfiguration documents: the user types only address and password.

Three formats describe the same servers: Thunderbird's ``config-v1.1.xml``,
Microsoft's Autodiscover (POX) response, and an Apple ``.mobileconfig``
profile. They are built from ``hostname`` and the listeners the server
bound, preferring implicit TLS (imaps over imap, pop3s over pop3,
submissions over submission). The XML is built with ``xml.etree`` and the
profile with ``plistlib``, so an address full of markup characters comes
out escaped. Pure functions: the HTTP listener (servers/http.py) serves them.
"""

from __future__ import annotations

import plistlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from postwarden.mail.address import Address, AddressError, parse_mailbox

AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a")
# Bounds the size of an address we will echo into a document.
MAX_ADDRESS = 320


@dataclass(frozen=True, slots=True)
class Servers:
    """What the documents describe: our hostname and the port bound per listener kind."""

    hostname: str
    ports: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server a client should use: protocol, port, and how TLS starts."""

    protocol: str  # "imap" | "pop3" | "smtp"
    port: int
    implicit_tls: bool  # False: STARTTLS (STLS) on a plain port


# Most preferred first, per protocol: (listener kind, protocol, implicit TLS).
_INCOMING = (("imaps", "imap", True), ("imap", "imap", False),
             ("pop3s", "pop3", True), ("pop3", "pop3", False))
_OUTGOING = (("submissions", "smtp", True), ("submission", "smtp", False))


def _endpoints(cfg: Servers, table: tuple[tuple[str, str, bool], ...]) -> list[Endpoint]:
    return [Endpoint(protocol, cfg.ports[kind], tls)
            for kind, protocol, tls in table if kind in cfg.ports]


def incoming(cfg: Servers) -> list[Endpoint]:
    return _endpoints(cfg, _INCOMING)


def outgoing(cfg: Servers) -> list[Endpoint]:
    return _endpoints(cfg, _OUTGOING)


def parse_email(text: str) -> Address:
    """The address a client asked about, or AddressError (the caller says 400)."""
    if len(text) > MAX_ADDRESS:
        raise AddressError("address too long")
    return parse_mailbox(text.strip(), smtputf8=True)


def _sub(parent: ET.Element, tag: str, text: str | int) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(text)
    return element


def _xml(root: ET.Element) -> bytes:
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def thunderbird(cfg: Servers, email: Address | None) -> bytes:
    """Thunderbird's clientConfig 1.1 for the address's domain (or our hostname's)."""
    domain = email.domain if email is not None else cfg.hostname
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"{domain} mail")
    _sub(provider, "displayShortName", domain)
    for tag, endpoints in (("incomingServer", incoming(cfg)), ("outgoingServer", outgoing(cfg))):
        for e in endpoints:
            server = ET.SubElement(provider, tag, type=e.protocol)
            _sub(server, "hostname", cfg.hostname)
            _sub(server, "port", e.port)
            _sub(server, "socketType", "SSL" if e.implicit_tls else "STARTTLS")
            _sub(server, "authentication", "password-cleartext")
            # Accounts are named by their full address.
            _sub(server, "username", "%EMAILADDRESS%" if email is None else str(email))
    return _xml(root)


def autodiscover(cfg: Servers, email: Address) -> bytes:
    """The Autodiscover (POX) response Outlook asks for with the user's address."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_RESPONSE)
    account = ET.SubElement(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for e in incoming(cfg) + outgoing(cfg):
        protocol = ET.SubElement(account, "Protocol")
        _sub(protocol, "Type", e.protocol.upper())
        _sub(protocol, "Server", cfg.hostname)
        _sub(protocol, "Port", e.port)
        _sub(protocol, "LoginName", str(email))
        _sub(protocol, "DomainRequired", "off")
        _sub(protocol, "SPA", "off")
        _sub(protocol, "Encryption", "SSL" if e.implicit_tls else "TLS")
        _sub(protocol, "AuthRequired", "on")
    return _xml(root)


def autodiscover_request(body: bytes) -> str:
    """The EMailAddress of an Autodiscover request, or ValueError.

    The body is bounded by the listener (``http_max_body_size``); a DOCTYPE
    is refused outright, so no entity is ever expanded.
    """
    if b"<!DOCTYPE" in body.upper():
        raise ValueError("DOCTYPE not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError("not XML") from exc
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "EMailAddress" and element.text:
            return element.text
    raise ValueError("no EMailAddress")


def mobileconfig(cfg: Servers, email: Address) -> bytes:
    """An Apple configuration profile with one mail account (unsigned).

    The UUIDs are derived from hostname and address, so downloading the
    profile again replaces the installed one instead of adding a twin.
    """
    ins, outs = incoming(cfg), outgoing(cfg)
    if not ins or not outs:
        raise LookupError("no incoming or outgoing listener to describe")
    into, out = ins[0], outs[0]
    address = str(email)
    ident = f"{'.'.join(reversed(cfg.hostname.split('.')))}.mail"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.account",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"account/{cfg.hostname}/{address}")),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP" if into.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": address,
        "IncomingMailServerHostName": cfg.hostname,
        "IncomingMailServerPortNumber": into.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": cfg.hostname,
        "OutgoingMailServerPortNumber": out.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"profile/{cfg.hostname}/{address}")),
        "PayloadDisplayName": f"{cfg.hostname} mail",
        "PayloadContent": [account],
    }
    data: bytes = plistlib.dumps(profile)
    return data
