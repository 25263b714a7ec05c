"""The SQLite backup's file rules: released files may be gone, referenced ones may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwarden.storage.interfaces import StoreError
from postwarden.storage.mailbox import UidSet
from postwarden.storage.sqlite import SqliteStore
from postwarden.storage.sqlite.backup import backup, restore

ALICE = "alice@example.test"


def filled(root: Path, count: int) -> tuple[SqliteStore, list[str]]:
    """A store with ``count`` messages in alice's INBOX; their file names."""
    store = SqliteStore(root)
    store.directory.add_domain("example.test")
    store.directory.add_account(ALICE, "hash")
    store.mailboxes.ensure_mailboxes(ALICE)
    names = []
    for n in range(count):
        writer = store.blobs.new_blob(f"m{n}x")
        writer.write(f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
        store.mailboxes.append(ALICE, "INBOX", writer.commit())
        names.append(f"m{n}x")
    return store, names


class TestBackupFiles:
    def test_a_released_file_the_collector_took_is_skipped_and_restore_works(
            self, tmp_path: Path) -> None:
        """Expunged, then collected mid-backup: nothing refers to it, so it is not needed."""
        store, names = filled(tmp_path / "data", 2)
        box = store.mailboxes.get_mailbox(ALICE, "INBOX")
        assert box is not None
        store.mailboxes.expunge(box.id, UidSet.of([(1, 1)]), deleted_only=False)
        store.blobs.blob_path(names[0]).unlink()  # as the collector does after the grace
        report = backup(store, tmp_path / "b")
        assert (report.messages, report.files, report.skipped) == (1, 1, 1)
        restored = restore(tmp_path / "b", tmp_path / "again")
        assert (restored.files, restored.skipped) == (1, 1)
        again = SqliteStore(tmp_path / "again")
        assert again.blobs.read_blob(names[1]) == b"Subject: 1\r\n\r\nbody 1\r\n"
        assert again.blobs.missing_files() == []

    def test_a_missing_referenced_file_stops_the_backup_naming_it(self, tmp_path: Path) -> None:
        """A message the database still has must be in the backup, or the backup fails."""
        store, names = filled(tmp_path / "data", 2)
        store.blobs.blob_path(names[1]).unlink()
        with pytest.raises(StoreError, match=f"message file {names[1]} is missing from"):
            backup(store, tmp_path / "b")
        assert not (tmp_path / "b" / "postwarden-backup.json").exists()

    def test_a_directory_without_a_manifest_is_not_restored(self, tmp_path: Path) -> None:
        """An unfinished backup (no manifest) or any other folder is refused."""
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "postwarden.sqlite3").write_bytes(b"")
        with pytest.raises(StoreError, match="is not a postwarden backup"):
            restore(tmp_path / "b", tmp_path / "again")
        assert not (tmp_path / "again" / "postwarden.sqlite3").exists()
