"""contrib/postwarden.service: a unit systemd accepts, with what serve relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent / "contrib" / "postwarden.service"


def settings() -> dict[str, str]:
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (.ci/run installs systemd)")
def test_systemd_verifies_the_unit_without_a_warning(tmp_path: Path) -> None:
    """systemd-analyze verify: no unknown key, no bad value (it warns on stderr for those)."""
    command = Path(sys.executable).with_name("postwarden")  # ExecStart must exist to verify
    unit = tmp_path / "postwarden.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(
        "/usr/local/bin/postwarden", str(command)), encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_the_unit_is_notify_with_a_watchdog_and_only_the_capabilities_serve_needs() -> None:
    """Type=notify and WatchdogSec match what serve sends; the root start is fenced in."""
    unit = settings()
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main"
    assert unit["WatchdogSec"] == "30s"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert set(unit["CapabilityBoundingSet"].split()) == {
        "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"}
    assert unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"
    assert unit["ReadWritePaths"] == "/var/lib/postwarden" and unit["PrivateTmp"] == "yes"
