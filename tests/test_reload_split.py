"""Which settings a SIGHUP applies and which wait for a restart (app.live_part)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from postwarden.app import live_part, needs_restart
from postwarden.config import Config, from_dict


def config(**sections: Any) -> Config:
    raw: dict[str, Any] = {"hostname": "mail.example.test", **sections}
    return from_dict(raw, Path("/etc/postwarden/postwarden.toml"))


OLD = config()


def test_live_settings_are_taken_from_the_new_config() -> None:
    """Relay rules, routes, auth checks, a session limit and [imap] apply at once."""
    new = config(relay={"trusted_networks": ["192.0.2.0/24"]},
                 routes=[{"domain": "partner.example", "to": "10.0.0.4:25"}],
                 auth_checks={"enabled": False}, limits={"max_recipients": 5},
                 imap={"idle_seconds": 60}, listen={"proxy_from": ["10.0.0.9/32"]})
    live = live_part(OLD, new)
    assert live.relay == new.relay and live.routes == new.routes
    assert live.auth_checks == new.auth_checks and live.imap == new.imap
    assert live.limits.max_recipients == 5 and live.proxy_from == new.proxy_from
    assert needs_restart(OLD, new) == []


def test_restart_only_settings_keep_their_old_values_and_are_named() -> None:
    """Listeners, hostname, [delivery], [service] and the throttle's limits wait."""
    new = config(hostname="other.example.test", listen={"smtp": ["127.0.0.1:25"]},
                 delivery={"max_concurrent": 3}, service={"user": "nobody"},
                 limits={"auth_workers": 4, "max_recipients": 5})
    live = live_part(OLD, new)
    assert (live.hostname, live.listen, live.delivery, live.service) == (
        OLD.hostname, OLD.listen, OLD.delivery, OLD.service)
    assert live.limits.auth_workers == OLD.limits.auth_workers
    assert live.limits.max_recipients == 5
    assert needs_restart(OLD, new) == ["hostname", "listen", "delivery", "service",
                                       "limits.auth_workers"]
