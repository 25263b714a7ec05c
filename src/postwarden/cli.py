"""The ``postwarden`` command line (SPEC §1).

Every failure is one human-readable line on stderr and a non-zero exit:
``postwarden: error: <what>``, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from postwarden import __version__
from postwarden import config as configmod
from postwarden import log as logsetup
from postwarden.admin import AdminError
from postwarden.config import Config, ConfigError
from postwarden.intake.recipients import RecipientPolicy, catch_all_key
from postwarden.intake.senderauth import SenderAuth
from postwarden.log import kv
from postwarden.mail.address import Address, AddressError, normalise_domain, parse_address
from postwarden.policy.authchecks import AuthVerdict
from postwarden.policy.passwords import hash_password
from postwarden.servers.tls import write_self_signed
from postwarden.storage.factory import async_boundary, closing, open_store
from postwarden.storage.interfaces import Directory, StoreError

DEMO_USER = "demo"
DEMO_PASSWORD = "demo-password"
LOCKED_HASH = "!locked"  # matches no password: an account only readable after `user passwd`


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _config(args: argparse.Namespace) -> Config:
    return configmod.load(args.config)


def _store(cfg: Config) -> Directory:
    return open_store(cfg).directory


def _domain(text: str) -> str:
    try:
        return normalise_domain(text.strip())
    except AddressError as exc:
        raise CLIError(f"bad domain {text!r}: {exc}") from None


def _address(text: str) -> Address:
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise CLIError(f"bad address {text!r}: {exc}") from None
    if address.is_literal:
        raise CLIError(f"bad address {text!r}: address literals are not mailboxes")
    return address


def _local_address(store: Directory, text: str) -> Address:
    address = _address(text)
    if not store.is_local_domain(address.domain):
        raise CLIError(f"{address.domain} is not a local domain (add it with `domain add`)")
    for ch in "%!@\"":
        if ch in address.local:
            raise CLIError(f"bad address {text!r}: {ch!r} is not allowed in a mailbox name")
    return address


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CLIError("no terminal to ask for the password: pipe it in with"
                           " --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CLIError("passwords do not match")
    if len(password) < 8:
        raise CLIError("password too short (at least 8 characters)")
    return password


# --- commands ---------------------------------------------------------------


def add_local_domain(store: Directory, domain: str) -> None:
    """Add a domain and its postmaster (RFC 5321 §4.5.1).

    The first domain gets a postmaster *account* (locked until `user passwd`);
    later domains get a postmaster alias pointing to it.
    """
    existing = store.list_domains()
    store.add_domain(domain)
    postmaster = f"postmaster@{domain}"
    if store.get_account(postmaster) or store.alias_targets(postmaster):
        return
    admin = next(
        (f"postmaster@{d}" for d in existing if store.get_account(f"postmaster@{d}")), None
    )
    if admin is None:
        store.add_account(postmaster, LOCKED_HASH)
    else:
        store.add_alias(postmaster, [admin])


def remove_local_domain(store: Directory, domain: str) -> None:
    """Remove a domain with its postmaster, refusing while anything still needs it.

    Users of the domain, and aliases elsewhere that lead into it (such as the
    postmaster aliases of later domains), would be left pointing at nothing.
    """
    suffix = f"@{domain}"
    users = [a for a in store.list_accounts() if a.endswith(suffix)]
    if any(u != f"postmaster{suffix}" for u in users):
        raise CLIError(f"domain {domain} still has users; remove them first")
    leading_in = [
        f"{name} -> {', '.join(targets)}"
        for name, targets in store.list_aliases()
        if not name.endswith(suffix) and any(t.endswith(suffix) for t in targets)
    ]
    if leading_in:
        raise CLIError(
            f"aliases still lead into {domain} ({'; '.join(leading_in)}); change them first"
        )
    for user in users:
        store.remove_account(user)
    store.remove_domain(domain)


def cmd_init(args: argparse.Namespace) -> None:
    path = Path(args.config)
    domain = _domain(args.domain)
    hostname = _domain(args.hostname)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(configmod.render_default(hostname, domain, demo=args.demo_user),
                        encoding="utf-8")
        print(f"wrote {path}")
    cfg = _config(args)
    store = _store(cfg)
    if not cfg.tls.cert.exists() or not cfg.tls.key.exists():
        write_self_signed(cfg.tls.cert, cfg.tls.key, cfg.hostname)
        print(f"wrote self-signed certificate {cfg.tls.cert}")
    if not store.is_local_domain(domain):
        add_local_domain(store, domain)
        print(f"added domain {domain}")
    if args.demo_user:
        demo = f"{DEMO_USER}@{domain}"
        if store.get_account(demo) is None:
            store.add_account(demo, hash_password(DEMO_PASSWORD))
            print(f"added user {demo} with password {DEMO_PASSWORD!r} (change it: user passwd)")


def cmd_serve(args: argparse.Namespace) -> None:
    from postwarden.app import serve

    serve(_config(args), _workers(args.workers))


def _workers(text: str | None) -> int | None:
    """``--workers N``: checked here, for a one-line error rather than argparse's usage."""
    if text is None:
        return None
    try:
        count = int(text)
    except ValueError:  # "abc", "2.5", and digits int() does not take ("²")
        count = 0
    if count < 1:
        raise CLIError(f"--workers: expected a whole number of at least 1, got {text!r}")
    return count


def cmd_domain(args: argparse.Namespace) -> None:
    store = _store(_config(args))
    match args.action:
        case "add":
            add_local_domain(store, _domain(args.domain))
        case "remove":
            remove_local_domain(store, _domain(args.domain))
        case "list":
            for d in store.list_domains():
                print(d)


def cmd_user(args: argparse.Namespace) -> None:
    store = _store(_config(args))
    match args.action:
        case "add":
            address = _local_address(store, args.address)
            if store.alias_targets(address.key):
                raise CLIError(f"{address.key} is an alias; remove the alias first")
            store.add_account(address.key, hash_password(_read_password(args)))
        case "passwd":
            store.set_password(_address(args.address).key, hash_password(_read_password(args)))
        case "remove":
            store.remove_account(_address(args.address).key)
        case "list":
            for a in store.list_accounts():
                print(a)
        case "quota":
            _quota(_config(args), _address(args.address).key, args.limit)


def _quota(cfg: Config, account: str, limit: str | None) -> None:
    """Show an account's usage, or set its limit in octets ("none": no limit)."""
    mailboxes = open_store(cfg).mailboxes
    if limit is not None:
        if limit != "none" and not limit.isdigit():
            raise CLIError(f"bad quota {limit!r}: a number of octets, or none")
        mailboxes.set_quota(account, None if limit == "none" else int(limit))
    quota = mailboxes.quota(account)
    print(f"{account}: {quota.used} octets in {quota.messages} messages,"
          f" limit {'none' if quota.limit is None else quota.limit}")


def _alias_name(store: Directory, text: str) -> str:
    """An alias's key: a local address, or ``@domain`` for the domain's catch-all."""
    if text.strip().startswith("@"):
        domain = _domain(text.strip()[1:])
        if not store.is_local_domain(domain):
            raise CLIError(f"{domain} is not a local domain (add it with `domain add`)")
        return catch_all_key(domain)
    return _local_address(store, text).key


def _alias_target(store: Directory, text: str, name: str) -> str:
    """A target as stored; a local one must exist (else mail to the alias is lost)."""
    target = _address(text)
    if not store.is_local_domain(target.domain):
        return str(target)
    key = target.key
    if not (key == name or store.get_account(key) or store.alias_targets(key)
            or store.alias_targets(catch_all_key(target.domain))):
        raise CLIError(f"no such local user or alias: {key} (add it first)")
    return key


def _alias_loop(store: Directory, name: str, targets: list[str]) -> list[str] | None:
    """The chain from ``name`` back to itself if the new alias would close a loop."""
    aliases = dict(store.list_aliases())
    aliases[name] = tuple(targets)
    came_from: dict[str, str] = {}
    todo = [name]
    while todo:  # each alias is visited once: bounded by the table's size
        current = todo.pop()
        for target in aliases.get(current, ()):
            if target == name:
                chain = [current]
                while chain[-1] != name:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), name]
            if target not in came_from:
                came_from[target] = current
                todo.append(target)
    return None


def cmd_alias(args: argparse.Namespace) -> None:
    store = _store(_config(args))
    match args.action:
        case "add":
            name = _alias_name(store, args.address)
            if store.get_account(name):
                raise CLIError(f"{name} is a user; an alias cannot shadow it")
            given = [t.strip() for t in args.targets.split(",") if t.strip()]
            if not given:
                raise CLIError("alias needs at least one target")
            keys = [_alias_target(store, t, name) for t in given]
            loop = _alias_loop(store, name, keys)
            if loop is not None:
                raise CLIError(f"alias loop: {' -> '.join(loop)}")
            store.add_alias(name, keys)
        case "remove":
            store.remove_alias(_alias_name(store, args.address))
        case "list":
            for name, targets in store.list_aliases():
                print(f"{name} -> {', '.join(targets)}")


def cmd_auth_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    mail_from = "" if args.mail_from in ("", "<>") else str(_address(args.mail_from))
    if args.message:
        with open(args.message, "rb") as f:
            data = f.read(cfg.limits.max_message_size + 1)
        if len(data) > cfg.limits.max_message_size:
            raise CLIError(f"{args.message}: larger than max_message_size")
        data = re.sub(rb"\r?\n", b"\r\n", data)
    else:
        data = f"From: <{mail_from}>\r\n\r\n".encode()
    store = async_boundary(open_store(cfg))
    verdict = asyncio.run(closing(store, _auth_check(
        cfg, RecipientPolicy(store, cfg.relay, cfg.hostname), args, mail_from, data)))
    reply = verdict.reply.encode().decode().strip() if verdict.reply else "(message goes on)"
    print(f"{verdict.action.name}  {reply}")
    print(f"  rule: {verdict.rule}")
    if verdict.sender_proof:
        print(f"  reports to the sender: {'no' if verdict.sender_proof == 'none' else 'yes'}"
              f" (sender proof: {verdict.sender_proof})")
    for reason in verdict.reasons:
        print(f"  why:  {reason}")
    print(verdict.header.replace("\r\n", "\n"), end="")
    return 1 if verdict.reply is not None else 0


async def _auth_check(cfg: Config, policy: RecipientPolicy, args: argparse.Namespace,
                      mail_from: str, data: bytes) -> AuthVerdict:
    """What the MX listener would decide for an unauthenticated client."""
    client_ip = _ip(args.client, "client")
    local = _ip("127.0.0.1", "local")
    facts = await policy.client_facts(client_ip, local, tls=False, auth_user=None,
                                      now=time.time())
    trusted = "client may relay ([relay] rules)" if policy.vouches_for_sender(facts) else ""
    return await SenderAuth(cfg, policy).check(client_ip=str(client_ip), helo=args.helo,
                                               mail_from=mail_from, message=data, trusted=trusted)


def _ip(text: str, what: str) -> configmod.IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise CLIError(f"bad {what} address {text!r}") from None


def cmd_relay_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    store = async_boundary(open_store(cfg))
    return asyncio.run(closing(store, _relay_check(
        cfg, RecipientPolicy(store, cfg.relay, cfg.hostname), args)))


async def _relay_check(cfg: Config, policy: RecipientPolicy, args: argparse.Namespace) -> int:
    """The same fact gathering and decisions as the SMTP server's, explained."""
    local_default = next(iter(cfg.listen.get("smtp", ())), None)
    local_ip = _ip(args.local_addr or (local_default.host if local_default else "127.0.0.1"),
                   "local")
    user = _address(args.user).key if args.user else None
    client = await policy.client_facts(_ip(args.client, "client"), local_ip, tls=False,
                                       auth_user=user, now=time.time())
    ok = True
    if args.sender:
        sender = None if args.sender in ("", "<>") else _address(args.sender)
        refusal = await policy.check_sender(user, sender)
        if refusal is not None:
            ok = False
            print(f"MAIL FROM:<{sender}>: REJECT  {refusal.reply.encode().decode().strip()}")
            print(f"  rule: {refusal.rule}")
            for reason in refusal.reasons:
                print(f"  why:  {reason}")
    for text in args.recipients:
        try:
            address = _recipient(text)
        except AddressError as exc:
            ok = False
            print(f"{text}: REJECT  501 5.1.3 Bad address syntax ({exc})")
            continue
        d = await policy.check_recipient(client, address, null_sender=args.sender == "<>")
        ok = ok and d.accepted
        print(f"{address}: {d.verdict.name}  {d.reply.encode().decode().strip()}")
        print(f"  rule: {d.rule} ({d.destination.value})")
        for reason in d.reasons:
            print(f"  why:  {reason}")
    return 0 if ok else 1


def _recipient(text: str) -> Address:
    """An address as RCPT TO takes it: ``postmaster`` alone is the local postmaster."""
    if text.strip().strip("<>").lower() == "postmaster":
        return Address("postmaster", "")  # as parse_path gives it for <postmaster>
    return parse_address(text)


def cmd_dkim(args: argparse.Namespace) -> None:
    from postwarden.delivery import dkimsign

    cfg = _config(args)
    domain = _domain(args.domain)
    if not _store(cfg).is_local_domain(domain):
        raise CLIError(f"{domain} is not a local domain (add it with `domain add`)")
    now = time.time()
    match args.action:
        case "generate":
            try:
                key = dkimsign.generate(cfg.data_dir, domain, args.selector, args.algorithm, now)
            except dkimsign.DkimError as exc:
                raise CLIError(str(exc)) from None
            print(key.dns_record())
        case "show":
            keys = dkimsign.load_keys(cfg.data_dir, domain)
            if not keys:
                raise CLIError(f"no DKIM keys for {domain} (make one with `dkim generate`)")
            active = dkimsign.active_keys(keys, now, cfg.delivery.dkim_rotation_delay)
            for key in keys:
                made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created))
                state = "signing" if key in active else "not signing"
                print(f"; {key.selector} {key.algorithm} made {made} UTC, {state}")
                print(key.dns_record())
        case "remove":
            if not dkimsign.remove(cfg.data_dir, domain, args.selector.lower()):
                raise CLIError(f"no selector {args.selector} for {domain}")


def cmd_queue(args: argparse.Namespace) -> int:
    from postwarden.delivery.queuecli import run_queue_command

    cfg = _config(args)
    return run_queue_command(cfg, open_store(cfg), args)


def cmd_blobs(args: argparse.Namespace) -> int:
    """Message files the database does not know: listed, re-attached or removed on request.

    Nothing else ever deletes such a file (it may belong to a restored
    database's future, or to a message in flight on another node).
    """
    store = open_store(_config(args))
    unknown = store.blobs.unknown_files()
    match args.action:
        case "check":
            for u in unknown:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(u.modified))
                print(f"unknown  {u.name}  {u.size} bytes  {when}")
            missing = store.blobs.missing_files()
            for name in missing:
                print(f"missing  {name}")
            print(f"{len(unknown)} unknown file(s), {len(missing)} missing file(s)")
            return 1 if unknown or missing else 0
        case "attach":
            names = [u.name for u in unknown] if args.all else args.names
            account = _address(args.user).key
            if store.directory.get_account(account) is None:
                raise CLIError(f"no such user: {account}")
            print(f"attached {store.mailboxes.attach_unknown(account, names)} file(s)"
                  f" to {account}'s INBOX")
        case "remove":
            names = [u.name for u in unknown] if args.all else args.names
            print(f"removed {store.blobs.remove_unknown(names)} unknown file(s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from postwarden.admin import check

    nameservers = [configmod.parse_host_port(ns, "--dns") for ns in args.dns]
    lines = check.run(_config(args), nameservers, args.timeout)
    for line in lines:
        print(line.render())
    return check.exit_code(lines)


def cmd_backup(args: argparse.Namespace) -> None:
    from postwarden.admin import backup

    r = backup.backup(_config(args), Path(args.dest))
    print(f"backed up {r.messages} messages ({r.files} files, {r.octets} octets) to {args.dest}")


def cmd_restore(args: argparse.Namespace) -> None:
    from postwarden.admin import backup

    cfg = _config(args)
    r = backup.restore(cfg, Path(args.src), args.force)
    print(f"restored {r.messages} messages ({r.files} files, {r.octets} octets)"
          f" into {cfg.data_dir}")


def cmd_migrate(args: argparse.Namespace) -> int:
    from postwarden.admin import migrate

    report = migrate.migrate(_config(args), args.to, args.blobs, args.password_file)
    for table in report.tables:
        print(table.line())
    print(f"blobs read back and hashed: {report.blobs_verified} ({report.octets} octets)")
    if not report.ok:
        print("postwarden: error: the copy does not match its source", file=sys.stderr)
        return 1
    dsn = migrate.shown_dsn(args.to)
    settings = f'backend = "postgresql", dsn = "{dsn}", blobs = "{args.blobs}"'
    if args.password_file is not None:
        settings += f', password_file = "{args.password_file.resolve()}"'
    print(f"migrated: set [storage] {settings} to serve from it")
    if dsn != args.to:
        print("(the password is not shown: put it in the file [storage] password_file"
              " names, not in dsn)")
    return 0


def cmd_import(args: argparse.Namespace) -> None:
    from postwarden.admin import importer

    cfg = _config(args)
    account = _address(args.user).key
    if args.mbox:
        report = importer.import_mbox(cfg, Path(args.mbox), account, args.mailbox)
    else:
        report = importer.import_maildir(cfg, Path(args.maildir), account, args.mailbox)
    counts = ", ".join(f"{name} {n}" for name, n in report.per_mailbox.items())
    print(f"imported {report.total} messages into {account}" + (f" ({counts})" if counts else ""))


# --- parser -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postwarden", description="A mail server.")
    p.add_argument("--version", action="version", version=f"postwarden {__version__}")
    p.add_argument("-c", "--config",
                   default=os.environ.get("POSTWARDEN_CONFIG", configmod.DEFAULT_PATH),
                   help="config file (default: $POSTWARDEN_CONFIG or ./postwarden.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="write a config, data dir and self-signed certificate")
    s.add_argument("--hostname", default="mail.example.test",
                   help="this server's name, in banners and Received headers")
    s.add_argument("--domain", default="example.test", help="the first local mail domain")
    s.add_argument("--demo-user", action="store_true",
                   help=f"also add {DEMO_USER}@DOMAIN with a known password, and listen on"
                        " unprivileged loopback ports instead of 25, 587, 465, 110, 995, 143, 993")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("serve", help="run every listener and the delivery queue")
    s.add_argument("--workers", metavar="N",
                   help="N processes sharing the listeners and the store"
                        " (default: [service] workers, 1)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("domain", help="local domains")
    a = s.add_subparsers(dest="action", required=True)
    for name, verb in (("add", "add a local domain (and its postmaster)"),
                       ("remove", "remove a local domain without users")):
        a.add_parser(name, help=verb).add_argument("domain", help="domain name")
    a.add_parser("list", help="list local domains")
    s.set_defaults(func=cmd_domain)

    s = sub.add_parser("user", help="mailbox accounts")
    a = s.add_subparsers(dest="action", required=True)
    for name, verb in (("add", "add a mailbox account"), ("passwd", "set a user's password")):
        x = a.add_parser(name, help=verb)
        x.add_argument("address", help="user@local.domain")
        x.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin (else prompt)")
    a.add_parser("remove", help="remove an account").add_argument(
        "address", help="user@local.domain")
    a.add_parser("list", help="list accounts")
    x = a.add_parser("quota", help="show usage; with LIMIT, set it (octets, or none)")
    x.add_argument("address", help="user@local.domain")
    x.add_argument("limit", nargs="?", help="octets, or none for no limit")
    s.set_defaults(func=cmd_user)

    s = sub.add_parser("alias", help="aliases, also to external addresses")
    a = s.add_subparsers(dest="action", required=True)
    x = a.add_parser("add", help="add an alias")
    x.add_argument("address", help="alias@local.domain, or @local.domain for a catch-all")
    x.add_argument("targets", help="TARGET[,TARGET...]: users, aliases or external addresses")
    a.add_parser("remove", help="remove an alias").add_argument(
        "address", help="alias@local.domain or @local.domain")
    a.add_parser("list", help="list aliases")
    s.set_defaults(func=cmd_alias)

    s = sub.add_parser("relay", help="explain relay decisions")
    a = s.add_subparsers(dest="action", required=True)
    x = a.add_parser("check", help="what the SMTP server would answer to each recipient")
    x.add_argument("--client", required=True, help="client IP address")
    x.add_argument("--local-addr", help="server address the client connects to")
    x.add_argument("--user", help="authenticated user")
    x.add_argument("--sender", help="MAIL FROM address (<> for the null sender)")
    x.add_argument("recipients", nargs="+", metavar="RCPT",
                   help="recipient address, or postmaster")
    s.set_defaults(func=cmd_relay_check)

    s = sub.add_parser("dkim", help="DKIM signing keys")
    a = s.add_subparsers(dest="action", required=True)
    x = a.add_parser("generate", help="make a key; prints the DNS record to publish")
    x.add_argument("domain", help="a local domain")
    x.add_argument("--selector", help="default: pw + today's date + r (RSA) or e (Ed25519)")
    x.add_argument("--algorithm", default="rsa-sha256", help="rsa-sha256 or ed25519-sha256")
    a.add_parser("show", help="every key's DNS record").add_argument(
        "domain", help="a local domain")
    x = a.add_parser("remove", help="retire a key (after rotation)")
    x.add_argument("domain", help="a local domain")
    x.add_argument("selector", help="the key's selector, as dkim show lists it")
    s.set_defaults(func=cmd_dkim)

    s = sub.add_parser("auth", help="explain sender authentication (SPF, DKIM, DMARC, ARC)")
    a = s.add_subparsers(dest="action", required=True)
    x = a.add_parser("check", help="what the MX listener would decide for this sender")
    x.add_argument("--client", required=True, help="client IP address")
    x.add_argument("--helo", required=True, help="the name the client greets with")
    x.add_argument("--from", dest="mail_from", required=True,
                   help="MAIL FROM address (<> for the null sender)")
    x.add_argument("--message", help="message file (default: only a From: of --from)")
    s.set_defaults(func=cmd_auth_check)

    s = sub.add_parser("queue", help="the outbound queue")
    a = s.add_subparsers(dest="action", required=True)
    a.add_parser("list", help="queued messages with their last error")
    a.add_parser("show", help="one message in detail").add_argument("id", help="queue ID")
    x = a.add_parser("retry", help="try again now (the retry schedule is kept)")
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("id", nargs="?", help="queue ID")
    g.add_argument("--all", action="store_true", help="every queued message")
    x = a.add_parser("remove", help="drop a message from the queue")
    x.add_argument("id", help="queue ID")
    x.add_argument("--report", action="store_true",
                   help="send the sender a non-delivery report for the pending recipients")
    s.set_defaults(func=cmd_queue)

    s = sub.add_parser("blobs", help="message files the database does not know")
    a = s.add_subparsers(dest="action", required=True)
    a.add_parser("check", help="list unknown and missing message files")
    for name, verb in (("attach", "deliver into USER's INBOX"), ("remove", "delete")):
        x = a.add_parser(name, help=f"{verb} unknown files")
        if name == "attach":
            x.add_argument("user", help="user@local.domain")
        g = x.add_mutually_exclusive_group(required=True)
        g.add_argument("names", nargs="*", default=[], metavar="NAME", help="file name")
        g.add_argument("--all", action="store_true", help="every unknown file")
    s.set_defaults(func=cmd_blobs)

    s = sub.add_parser("check", help="setup checker: DNS, certificate, listeners, open relay")
    s.add_argument("--dns", action="append", default=[], metavar="HOST:PORT",
                   help="ask this DNS server (repeatable; default: [dns] nameservers)")
    s.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per DNS question and per listener (default 5)")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("backup", help="consistent copy of the (running) server's data_dir")
    s.add_argument("dest", help="new or empty directory for the copy")
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("restore", help="bring a backup back into a stopped server's data_dir")
    s.add_argument("src", help="a directory made by `postwarden backup`")
    s.add_argument("--force", action="store_true",
                   help="replace the mail store found in a non-empty data_dir")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("migrate", help="copy this SQLite data directory into PostgreSQL")
    s.add_argument("--to", required=True, metavar="DSN",
                   help="postgresql://user@host:port/database, empty")
    s.add_argument("--password-file", type=Path, metavar="PATH",
                   help="the database password: the file's first line (or PGPASSWORD)")
    s.add_argument("--blobs", choices=("database", "s3"), default="database",
                   help="where message bytes go (s3: the config's [s3] table)")
    s.set_defaults(func=cmd_migrate)

    s = sub.add_parser("import", help="bring existing mail (mbox or Maildir) into a mailbox")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--mbox", metavar="FILE", help="an mbox file (mboxrd or mboxo)")
    g.add_argument("--maildir", metavar="DIR",
                   help="a Maildir; its Maildir++ subfolders .A.B become mailboxes A/B")
    s.add_argument("user", help="user@local.domain")
    s.add_argument("--mailbox", default="INBOX", help="where the messages go (default INBOX)")
    s.set_defaults(func=cmd_import)
    return p


ADMIN_ACTIONS = {  # commands that change something: each is logged, one line
    ("init", None), ("domain", "add"), ("domain", "remove"), ("user", "add"),
    ("user", "passwd"), ("user", "remove"), ("user", "quota"), ("alias", "add"),
    ("alias", "remove"), ("queue", "retry"), ("queue", "remove"), ("blobs", "attach"),
    ("blobs", "remove"), ("restore", None), ("import", None), ("migrate", None),
}
ADMIN_FIELDS = ("domain", "address", "targets", "id", "all", "limit", "user", "names",
                "src", "force", "mbox", "maildir", "mailbox")


def _log_admin_action(args: argparse.Namespace) -> None:
    """One line in the server's log (``[log]``) per change made from the shell.

    Only the arguments are logged: passwords never are arguments (a prompt or stdin).
    """
    action = getattr(args, "action", None)
    if (args.command, action) not in ADMIN_ACTIONS or (
            action == "quota" and args.limit is None):
        return
    cfg = _config(args)
    logsetup.setup(fmt=cfg.log.format, file=cfg.log.file)
    fields = {name: getattr(args, name) for name in ADMIN_FIELDS
              if getattr(args, name, None) not in (None, False, [])}
    try:
        by = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or passwd file
        by = str(os.getuid())
    logging.getLogger("postwarden.admin").info(kv(
        "admin", by=by, command=args.command, action=action, **fields))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        code = func(args) or 0
        if code == 0:
            _log_admin_action(args)
        return code
    except (CLIError, AdminError, ConfigError, StoreError) as exc:
        print(f"postwarden: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"postwarden: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
