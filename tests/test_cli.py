"""The command line, run as a real process: what an administrator types and sees."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import postwarden
from postwarden import cli as cli_module
from postwarden.config import load
from postwarden.servers.tls import write_self_signed
from postwarden.storage.sqlite import SqliteStore

PASSWORD = "correct horse battery"
MALFORMED_DSN = "postgresql://pw:s3cret@[::1/db"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class CLI:
    """Runs ``python -m postwarden -c <config> ...`` in a scratch folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "postwarden.toml"

    def __call__(self, *args: str, stdin: str = "", config: Path | None = None,
                 env: dict[str, str] | None = None, pass_config: bool = True) -> Result:
        argv = [sys.executable, "-m", "postwarden"]
        if pass_config:
            argv += ["-c", str(config or self.config)]
        proc = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, cwd=self.root,
            timeout=60, env={**os.environ, **(env or {})},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str = "") -> str:
        result = self(*args, stdin=stdin)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        return result.out

    def fails(self, *args: str, stdin: str = "", config: Path | None = None) -> str:
        """Run a command that must fail; return its one-line error."""
        return one_line_error(self(*args, stdin=stdin, config=config))

    def store(self) -> SqliteStore:
        return SqliteStore(load(self.config).data_dir)


def one_line_error(result: Result) -> str:
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("postwarden: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `postwarden init` has run, once per module (TestInit tests init)."""
    root = tmp_path_factory.mktemp("init")
    CLI(root).ok("init", "--hostname", "mail.example.test", "--domain", "example.test")
    return root


@pytest.fixture
def cli(initialised: Path, tmp_path: Path) -> CLI:
    """A test's own copy of the initialised folder (config, certificate, database with
    the domain and postmaster): the same as running init in it, without a process each."""
    shutil.copytree(initialised, tmp_path, dirs_exist_ok=True)
    return CLI(tmp_path)


class TestInit:
    def test_writes_config_certificate_and_postmaster(self, tmp_path: Path) -> None:
        """A fresh folder gets a loadable config, a TLS pair, the domain and its postmaster."""
        runner = CLI(tmp_path)
        out = runner.ok("init", "--hostname", "mx.example.test", "--domain", "Example.TEST")
        assert "wrote" in out
        cfg = load(runner.config)
        assert cfg.hostname == "mx.example.test"
        assert cfg.tls.cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert "PRIVATE KEY" in cfg.tls.key.read_text()
        assert runner.ok("domain", "list").split() == ["example.test"]
        assert runner.ok("user", "list").split() == ["postmaster@example.test"]

    def test_running_twice_changes_nothing(self, cli: CLI) -> None:
        """A second init keeps the config, certificate and accounts as they are."""
        config = cli.config.read_bytes()
        cert = load(cli.config).tls.cert.read_bytes()
        cli.ok("init", "--hostname", "other.example.test", "--domain", "example.test")
        assert cli.config.read_bytes() == config
        assert load(cli.config).tls.cert.read_bytes() == cert
        assert cli.ok("user", "list").split() == ["postmaster@example.test"]

    def test_refuses_a_bad_domain(self, tmp_path: Path) -> None:
        """A domain that is not a domain is one line, and nothing is written."""
        runner = CLI(tmp_path)
        assert "bad domain" in runner.fails("init", "--domain", "not a domain")
        assert not runner.config.exists()


    def test_production_listeners_unless_demo(self, tmp_path: Path) -> None:
        """Without --demo-user the standard ports on every address; with it, loopback."""
        for sub in ("prod", "demo"):
            (tmp_path / sub).mkdir()
        production = CLI(tmp_path / "prod")
        production.ok("init", "--hostname", "mx.example.test", "--domain", "example.test")
        ports = {"smtp": 25, "submission": 587, "submissions": 465, "pop3": 110,
                 "pop3s": 995, "imap": 143, "imaps": 993}
        listen = load(production.config).listen
        for kind, port in ports.items():
            assert [(h.host, h.port) for h in listen[kind]] == [("0.0.0.0", port), ("::", port)]
        assert [h.host for h in listen["http"]] == ["127.0.0.1"]  # metrics never public
        demo = CLI(tmp_path / "demo")
        demo.ok("init", "--demo-user")
        assert all(h.host == "127.0.0.1" and h.port > 1024
                   for hps in load(demo.config).listen.values() for h in hps)


class TestServeTLSFiles:
    """A TLS pair that cannot be used stops `serve` in one line naming key and path
    (it used to start with 465, 995 and STARTTLS silently off)."""

    def test_missing_certificate(self, cli: CLI) -> None:
        cert = load(cli.config).tls.cert
        cert.unlink()
        assert cli.fails("serve") == (
            f"postwarden: error: tls.cert: {cert}: no such file"
            " (`postwarden init` makes a self-signed pair)")

    def test_unreadable_key(self, cli: CLI) -> None:
        key = load(cli.config).tls.key
        key.unlink()
        key.mkdir()  # unreadable even for root, unlike a chmod
        assert cli.fails("serve").startswith(f"postwarden: error: tls.key: {key}: cannot read")

    def test_certificate_that_is_not_pem(self, cli: CLI) -> None:
        cert = load(cli.config).tls.cert
        cert.write_text("not a certificate\n")
        assert cli.fails("serve") == f"postwarden: error: tls.cert: {cert}: not a PEM certificate"

    def test_key_of_another_certificate(self, cli: CLI, tmp_path: Path) -> None:
        tls = load(cli.config).tls
        write_self_signed(tmp_path / "other.pem", tmp_path / "other.key", "other.test")
        tls.key.write_bytes((tmp_path / "other.key").read_bytes())
        assert cli.fails("serve") == (
            f"postwarden: error: tls.key: {tls.key}: does not match the certificate {tls.cert}")


class TestDomains:
    def test_add_list_remove(self, cli: CLI) -> None:
        """Domains are normalised, listed and removed."""
        cli.ok("domain", "add", "Other.TEST.")
        assert cli.ok("domain", "list").split() == ["example.test", "other.test"]
        cli.ok("domain", "remove", "other.test")
        assert cli.ok("domain", "list").split() == ["example.test"]

    def test_new_domain_gets_a_postmaster_alias(self, cli: CLI) -> None:
        """postmaster@ every local domain works (RFC 5321 §4.5.1)."""
        cli.ok("domain", "add", "other.test")
        assert "postmaster@other.test -> postmaster@example.test" in cli.ok("alias", "list")

    def test_international_domain_is_stored_as_a_labels(self, cli: CLI) -> None:
        """``bücher.example`` is kept in the form DNS and SMTP compare."""
        cli.ok("domain", "add", "bücher.example")
        assert "xn--bcher-kva.example" in cli.ok("domain", "list").split()

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("domain", "add", "example.test"), "already exists"),
            (("domain", "add", "bad domain"), "bad domain"),
            (("domain", "add", "a..b"), "bad domain"),
            (("domain", "remove", "nowhere.test"), "no such domain"),
        ],
    )
    def test_bad_domain_commands_fail_in_one_line(
        self, cli: CLI, args: tuple[str, ...], words: str
    ) -> None:
        """Duplicates, bad names and unknown domains are explained, not raised."""
        assert words in cli.fails(*args)

    def test_domain_with_users_is_not_removed(self, cli: CLI) -> None:
        """Removing a domain would orphan its users, so it is refused."""
        cli.ok("user", "add", "alice@example.test", "--password-stdin", stdin=PASSWORD)
        assert "still has users" in cli.fails("domain", "remove", "example.test")
        assert cli.ok("domain", "list").split() == ["example.test"]


    def test_domain_that_other_aliases_lead_into_is_not_removed(self, cli: CLI) -> None:
        """The first domain's postmaster serves later domains: removing it would strand them."""
        cli.ok("domain", "add", "other.test")
        error = cli.fails("domain", "remove", "example.test")
        assert "postmaster@other.test -> postmaster@example.test" in error
        assert cli.ok("domain", "list").split() == ["example.test", "other.test"]
        cli.ok("alias", "remove", "postmaster@other.test")
        cli.ok("user", "add", "postmaster@other.test", "--password-stdin", stdin=PASSWORD)
        cli.ok("domain", "remove", "example.test")
        assert cli.ok("domain", "list").split() == ["other.test"]
        assert cli.store().directory.get_account("postmaster@example.test") is None


class TestUsers:
    def test_add_with_password_from_stdin(self, cli: CLI) -> None:
        """The account exists under its lower-case key, with a hashed password."""
        cli.ok("user", "add", "Alice@Example.Test", "--password-stdin", stdin=PASSWORD + "\n")
        assert "alice@example.test" in cli.ok("user", "list").split()
        account = cli.store().directory.get_account("alice@example.test")
        assert account is not None
        assert PASSWORD not in account.password_hash
        assert account.password_hash.startswith("$argon2id$")

    def test_passwd_and_remove(self, cli: CLI) -> None:
        """A password can be changed, and the user removed."""
        cli.ok("user", "add", "alice@example.test", "--password-stdin", stdin=PASSWORD)
        before = cli.store().directory.get_account("alice@example.test")
        cli.ok("user", "passwd", "alice@example.test", "--password-stdin", stdin="another one!")
        after = cli.store().directory.get_account("alice@example.test")
        assert before is not None and after is not None
        assert before.password_hash != after.password_hash
        cli.ok("user", "remove", "alice@example.test")
        assert "alice@example.test" not in cli.ok("user", "list")

    @pytest.mark.parametrize(
        ("address", "password", "words"),
        [
            ("alice@example.test", "short", "too short"),
            ("alice@example.test", "", "too short"),
            ("alice@elsewhere.test", PASSWORD, "not a local domain"),
            ("alice", PASSWORD, "bad address"),
            ("a@b@example.test", PASSWORD, "bad address"),
            ("alice@[192.0.2.1]", PASSWORD, "bad address"),
            ("al%ice@example.test", PASSWORD, "not allowed"),
            ('"a@b"@example.test', PASSWORD, "not allowed"),
        ],
    )
    def test_bad_user_add_fails_in_one_line(
        self, cli: CLI, address: str, password: str, words: str
    ) -> None:
        """Each refusal says why, and no account is created."""
        assert words in cli.fails("user", "add", address, "--password-stdin", stdin=password)
        assert cli.ok("user", "list").split() == ["postmaster@example.test"]

    def test_duplicate_user_is_refused(self, cli: CLI) -> None:
        """A second add of the same mailbox, in any case, fails."""
        cli.ok("user", "add", "alice@example.test", "--password-stdin", stdin=PASSWORD)
        error = cli.fails("user", "add", "ALICE@example.test", "--password-stdin", stdin=PASSWORD)
        assert "already exists" in error

    def test_user_cannot_shadow_an_alias(self, cli: CLI) -> None:
        """An address that is an alias cannot also become an account."""
        cli.ok("alias", "add", "sales@example.test", "postmaster@example.test")
        error = cli.fails("user", "add", "sales@example.test", "--password-stdin", stdin=PASSWORD)
        assert "is an alias" in error

    @pytest.mark.parametrize(
        "args",
        [("user", "remove", "nobody@example.test"),
         ("user", "passwd", "nobody@example.test", "--password-stdin")],
    )
    def test_unknown_user_fails_in_one_line(self, cli: CLI, args: tuple[str, ...]) -> None:
        """Removing or changing a user that does not exist says so."""
        assert "no such user" in cli.fails(*args, stdin=PASSWORD)

    def test_quota_is_shown_set_and_lifted(self, cli: CLI) -> None:
        """`user quota` shows usage; with a number it sets the limit, with none lifts it."""
        cli.ok("user", "add", "alice@example.test", "--password-stdin", stdin=PASSWORD)
        assert "limit none" in cli.ok("user", "quota", "alice@example.test")
        assert "0 octets in 0 messages, limit 5000" in cli.ok(
            "user", "quota", "alice@example.test", "5000")
        assert cli.store().mailboxes.quota("alice@example.test").limit == 5000
        assert "limit none" in cli.ok("user", "quota", "alice@example.test", "none")
        assert "bad quota" in cli.fails("user", "quota", "alice@example.test", "-5")
        assert "no such user" in cli.fails("user", "quota", "nobody@example.test", "10")


class TestAdminLog:
    def test_each_change_is_one_line_without_the_password(self, cli: CLI) -> None:
        """Changes are logged to [log] file, one line each; reads are not; no password."""
        cli.config.write_text(cli.config.read_text().replace('file = ""', 'file = "admin.log"'))
        cli.ok("user", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
        cli.ok("user", "list")
        cli.ok("alias", "add", "team@example.test", "bob@example.test")
        lines = (cli.root / "admin.log").read_text().splitlines()
        assert len(lines) == 2
        assert " INFO postwarden.admin admin by=" in lines[0]
        assert lines[0].endswith("command=user action=add address=bob@example.test")
        assert lines[1].endswith(
            "command=alias action=add address=team@example.test targets=bob@example.test")
        assert PASSWORD not in "\n".join(lines)


class TestPasswordPrompt:
    def test_no_terminal_says_to_use_password_stdin(self, cli: CLI) -> None:
        """Piped stdin and no flag: a hint, not an EOFError traceback; no account added."""
        assert "--password-stdin" in cli.fails("user", "add", "bob@example.test")
        assert "bob@" not in cli.ok("user", "list")


class TestAliases:
    def test_add_list_remove_with_external_targets(self, cli: CLI) -> None:
        """Targets may be local (stored by key) or external (stored as given)."""
        cli.ok("user", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
        cli.ok("alias", "add", "Team@example.test", "BOB@example.test, Ext.User@Remote.Test")
        assert "team@example.test -> bob@example.test, Ext.User@remote.test" in cli.ok(
            "alias", "list"
        )
        cli.ok("alias", "remove", "team@example.test")
        assert "team@" not in cli.ok("alias", "list")

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("alias", "add", "postmaster@example.test", "x@remote.test"), "cannot shadow"),
            (("alias", "add", "team@elsewhere.test", "x@remote.test"), "not a local domain"),
            (("alias", "add", "team@example.test", " , "), "at least one target"),
            (("alias", "add", "team@example.test", "x@remote.test,bad"), "bad address"),
            (("alias", "add", "team@example.test", "x@[192.0.2.1]"), "bad address"),
            (("alias", "remove", "team@example.test"), "no such alias"),
            (("alias", "add", "team@example.test", "nobody@example.test"), "no such local user"),
            (("alias", "add", "team@example.test", "team@example.test"), "alias loop"),
            (("alias", "add", "@elsewhere.test", "x@remote.test"), "not a local domain"),
        ],
    )
    def test_bad_alias_commands_fail_in_one_line(
        self, cli: CLI, args: tuple[str, ...], words: str
    ) -> None:
        """Shadowing a user, foreign domains, bad targets and unknown aliases are refused."""
        assert words in cli.fails(*args)
        assert "team@" not in cli.ok("alias", "list")

    def test_loop_through_other_aliases_is_refused_and_named(self, cli: CLI) -> None:
        """a -> b -> c exists; c -> a would close the loop: refused, the chain shown."""
        cli.ok("alias", "add", "c@example.test", "x@remote.test")
        cli.ok("alias", "add", "b@example.test", "c@example.test")
        cli.ok("alias", "add", "a@example.test", "b@example.test")
        cli.ok("alias", "remove", "c@example.test")
        error = cli.fails("alias", "add", "c@example.test", "y@remote.test, a@example.test")
        assert "alias loop: c@example.test -> a@example.test -> b@example.test ->" \
            " c@example.test" in error
        assert "c@example.test ->" not in cli.ok("alias", "list")

    def test_catch_all_takes_unknown_addresses_of_its_domain(self, cli: CLI) -> None:
        """``@domain`` accepts any unknown local part there; other domains are unaffected."""
        cli.ok("user", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
        assert cli("relay", "check", "--client", "203.0.113.5", "any@example.test").code == 1
        cli.ok("alias", "add", "@example.test", "bob@example.test")
        assert "@example.test -> bob@example.test" in cli.ok("alias", "list")
        out = cli.ok("relay", "check", "--client", "203.0.113.5", "any@example.test")
        assert "ACCEPT" in out
        cli.ok("alias", "remove", "@example.test")
        assert cli("relay", "check", "--client", "203.0.113.5", "any@example.test").code == 1

    def test_duplicate_alias_is_refused(self, cli: CLI) -> None:
        """An alias is added once; changing it means remove, then add."""
        cli.ok("alias", "add", "team@example.test", "x@remote.test")
        assert "already exists" in cli.fails("alias", "add", "team@example.test", "y@remote.test")


class TestRelayCheck:
    def test_exit_zero_when_every_recipient_is_accepted(self, cli: CLI) -> None:
        """A local mailbox is accepted from anyone, and the rule is printed."""
        out = cli.ok("relay", "check", "--client", "203.0.113.5", "postmaster@example.test")
        assert "ACCEPT" in out
        assert "local_recipient" in out

    def test_exit_one_when_a_recipient_is_refused(self, cli: CLI) -> None:
        """A stranger relaying gets the same 550 text the server would send."""
        result = cli("relay", "check", "--client", "203.0.113.5",
                     "postmaster@example.test", "x@remote.test")
        assert result.code == 1
        assert "550 5.7.1 Unable to relay for <x@remote.test>" in result.out
        assert "no_relay_rule" in result.out

    def test_authenticated_user_may_relay(self, cli: CLI) -> None:
        """--user stands for a client that authenticated."""
        out = cli.ok("relay", "check", "--client", "203.0.113.5", "--user",
                     "postmaster@example.test", "x@remote.test")
        assert "authenticated" in out

    def test_sender_not_owned_by_user_is_refused(self, cli: CLI) -> None:
        """sender_must_match_login is checked when --sender is given."""
        result = cli("relay", "check", "--client", "203.0.113.5", "--user",
                     "postmaster@example.test", "--sender", "boss@example.test",
                     "x@remote.test")
        assert result.code == 1
        assert "553 5.7.1" in result.out

    def test_unknown_local_user_and_bad_syntax_exit_one(self, cli: CLI) -> None:
        """A missing mailbox and an unparsable recipient are both refusals."""
        result = cli("relay", "check", "--client", "203.0.113.5", "nobody@example.test", "a@b@c")
        assert result.code == 1
        assert "550 5.1.1" in result.out
        assert "501 5.1.3" in result.out

    def test_bare_postmaster_is_accepted(self, cli: CLI) -> None:
        """``postmaster`` without a domain, as RCPT TO:<postmaster> allows."""
        out = cli.ok("relay", "check", "--client", "203.0.113.5", "postmaster")
        assert "ACCEPT" in out

    def test_bad_client_address_fails_in_one_line(self, cli: CLI) -> None:
        """The client must be an IP address."""
        assert "bad client address" in cli.fails(
            "relay", "check", "--client", "not-an-ip", "x@remote.test"
        )


class TestConfigErrors:
    def test_missing_config_file(self, tmp_path: Path) -> None:
        """Without a config, every command says to run init."""
        error = CLI(tmp_path).fails("domain", "list")
        assert "no such config file" in error

    def test_config_from_environment(self, cli: CLI) -> None:
        """POSTWARDEN_CONFIG names the config when -c is not given."""
        result = cli("domain", "list", pass_config=False,
                     env={"POSTWARDEN_CONFIG": str(cli.config)})
        assert result.code == 0, result.err
        assert result.out.split() == ["example.test"]

    def test_invalid_value_names_the_key(self, cli: CLI) -> None:
        """A bad value stops the command with the key's name."""
        text = cli.config.read_text().replace("max_recipients = 100", 'max_recipients = "ten"')
        cli.config.write_text(text)
        assert "limits.max_recipients" in cli.fails("domain", "list")

    def test_not_toml(self, cli: CLI) -> None:
        """A broken file is reported as such."""
        cli.config.write_text("hostname = [\n")
        assert "not valid TOML" in cli.fails("user", "list")

    def test_unreadable_config(self, tmp_path: Path) -> None:
        """A config path that cannot be read is one line, not a traceback."""
        (tmp_path / "dir.toml").mkdir()
        assert "cannot read" in CLI(tmp_path).fails("domain", "list", config=tmp_path / "dir.toml")


    @pytest.mark.parametrize("command", [("domain", "list"), ("migrate", "--to", MALFORMED_DSN)])
    def test_a_malformed_dsn_is_one_line_without_its_password(
            self, cli: CLI, command: tuple[str, ...]) -> None:
        """A PostgreSQL DSN that does not parse (an IPv6 host never closed), as [storage]
        dsn or migrate's --to: one line, which does not repeat the password."""
        text = cli.config.read_text().replace(
            'backend = "sqlite"\nblobs = "files"',
            f'backend = "postgresql"\ndsn = "{MALFORMED_DSN}"\nblobs = "database"')
        if command[0] != "migrate":  # migrate copies from the SQLite store to --to
            cli.config.write_text(text)
        error = cli.fails(*command)
        assert "cannot connect to PostgreSQL" in error and "IPv6" in error
        assert "s3cret" not in error


class TestHelp:
    def test_help_works_without_a_config(self, tmp_path: Path) -> None:
        """``postwarden --help`` lists the commands and exits 0."""
        result = CLI(tmp_path)("--help")
        assert result.code == 0
        for command in ("init", "serve", "domain", "user", "alias", "queue", "relay"):
            assert command in result.out

    def test_version(self, tmp_path: Path) -> None:
        result = CLI(tmp_path)("--version", pass_config=False)
        assert result.code == 0
        assert result.out.strip() == f"postwarden {postwarden.__version__}"

    def test_every_option_and_command_has_help_text(self) -> None:
        """Walks the whole parser: no argument, option or subcommand without help."""
        missing: list[str] = []
        todo = [("postwarden", cli_module._parser())]
        while todo:  # bounded: the parser tree is finite
            name, parser = todo.pop()
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    helped = {c.dest for c in action._choices_actions if c.help}
                    for sub, subparser in action.choices.items():
                        if sub not in helped:
                            missing.append(f"{name} {sub}")
                        todo.append((f"{name} {sub}", subparser))
                elif not action.help:
                    missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        assert missing == []
