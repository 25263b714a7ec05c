"""``postwarden backup DEST`` and ``postwarden restore SRC``.

The store copies itself consistently (``storage.factory.backup``); the rest
of ``data_dir`` (DKIM and SRS keys, certificates kept there) is copied
beside it, so a restored server signs, forwards and serves TLS as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from postwarden.admin import AdminError
from postwarden.config import Config
from postwarden.storage import factory
from postwarden.storage.factory import CopyReport


def backup(cfg: Config, dest: Path) -> CopyReport:
    """Copy the (possibly running) server's data into the new or empty directory ``dest``."""
    data_dir = cfg.data_dir.resolve()
    target = dest.resolve()
    if target == data_dir or data_dir in target.parents:
        raise AdminError(f"{dest} is inside data_dir {cfg.data_dir}: back up elsewhere")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AdminError(f"{dest} exists and is not an empty directory")
    if not (data_dir.is_dir() and any(data_dir.iterdir())):
        raise AdminError(f"data_dir {cfg.data_dir} has no server data to back up")
    store = factory.open_store(cfg)
    try:
        report = factory.backup(store, target)
    finally:
        store.close()
    _copy_others(data_dir, target, factory.store_names(cfg))
    return report


def restore(cfg: Config, src: Path, force: bool) -> CopyReport:
    """Bring the backup in ``src`` back into ``data_dir``, which must hold no server's data."""
    if not src.is_dir():
        raise AdminError(f"{src} is not a directory")
    data_dir = cfg.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        if factory.in_use(cfg):
            raise AdminError(f"a server is running on data_dir {data_dir}: stop it first")
        if not force:
            raise AdminError(f"data_dir {data_dir} is not empty: restore into an empty one,"
                             " or --force to replace what is there")
    report = factory.restore(cfg, src, replace=force)
    _copy_others(src, data_dir, factory.store_names(cfg))
    return report


def _copy_others(source: Path, target: Path, skip: frozenset[str]) -> None:
    """Every file and folder of ``source`` the store does not own (sockets and such left out)."""
    for entry in source.iterdir():
        if entry.name in skip:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target / entry.name, dirs_exist_ok=True,
                            ignore=_not_regular)
        elif entry.is_file():
            shutil.copy2(entry, target / entry.name)


def _not_regular(folder: str, names: list[str]) -> set[str]:
    base = Path(folder)
    return {n for n in names if not (base / n).is_file() and not (base / n).is_dir()}
