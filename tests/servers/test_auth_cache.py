"""The cache of verified logins: a repeat login skips argon2; a password change voids it."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.cli import add_local_domain
from postwarden.policy import passwords
from postwarden.policy.passwords import hash_password
from postwarden.policy.throttle import AuthThrottle
from postwarden.servers import common
from postwarden.servers.common import Authenticator, LoginResult
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.aio import AsyncSqliteStore

USER = "alice@example.test"
IP = "127.0.0.9"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "var")
    add_local_domain(store.directory, "example.test")
    store.directory.add_account(USER, hash_password("first secret"))
    return store


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each real argon2 verification the Authenticator runs, recorded."""
    seen: list[str] = []

    def counted(stored: str | None, password: str) -> bool:
        seen.append(password)
        return passwords.verify_password(stored, password)

    monkeypatch.setattr(common, "verify_password", counted)
    return seen


class TestCredentialCache:
    async def test_repeat_login_does_not_verify_again(self, store: SqliteStore,
                                                      verifications: list[str]) -> None:
        """The second login with the same password is answered from the cache."""
        auth = Authenticator(AsyncSqliteStore(store), AuthThrottle(10, 900))
        assert await auth.login(IP, USER, "first secret") == (LoginResult.OK, USER)
        assert await auth.login(IP, USER, "first secret") == (LoginResult.OK, USER)
        assert verifications == ["first secret"]

    async def test_wrong_password_is_still_verified_and_refused(
            self, store: SqliteStore, verifications: list[str]) -> None:
        """A cached user with a different password goes through argon2 and fails."""
        auth = Authenticator(AsyncSqliteStore(store), AuthThrottle(10, 900))
        await auth.login(IP, USER, "first secret")
        assert await auth.login(IP, USER, "guess") == (LoginResult.FAILED, "")
        assert verifications == ["first secret", "guess"]

    async def test_password_change_drops_the_cached_login(
            self, store: SqliteStore, verifications: list[str]) -> None:
        """After a password change the old password fails and the new one is verified."""
        auth = Authenticator(AsyncSqliteStore(store), AuthThrottle(10, 900))
        await auth.login(IP, USER, "first secret")
        store.directory.set_password(USER, hash_password("second secret"))
        assert await auth.login(IP, USER, "first secret") == (LoginResult.FAILED, "")
        assert await auth.login(IP, USER, "second secret") == (LoginResult.OK, USER)
        assert verifications == ["first secret", "first secret", "second secret"]

    async def test_cache_is_bounded(self, store: SqliteStore,
                                    verifications: list[str]) -> None:
        """Past ``cache_entries`` users the oldest entry is forgotten."""
        store.directory.add_account("bob@example.test", hash_password("bob secret"))
        auth = Authenticator(AsyncSqliteStore(store), AuthThrottle(10, 900), cache_entries=1)
        await auth.login(IP, USER, "first secret")
        await auth.login(IP, "bob@example.test", "bob secret")
        await auth.login(IP, USER, "first secret")
        assert verifications == ["first secret", "bob secret", "first secret"]
