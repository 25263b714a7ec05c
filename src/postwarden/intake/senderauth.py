"""Sender authentication for one message: gather facts, decide, log the verdict.

The server and ``postwarden auth check`` both come through ``SenderAuth.check``,
so what the CLI explains is what the server does.
"""

from __future__ import annotations

import asyncio
import logging

from postwarden.config import Config
from postwarden.intake.authdns import AuthDNS
from postwarden.intake.authfacts import EnvelopeFacts, envelope_facts, gather
from postwarden.intake.recipients import RecipientPolicy
from postwarden.log import kv
from postwarden.mail.address import Address
from postwarden.policy.authchecks import AuthVerdict, check_failed, decide, timed_out

log = logging.getLogger("postwarden.authchecks")


class SenderAuth:
    def __init__(self, cfg: Config, recipients: RecipientPolicy) -> None:
        self.cfg = cfg
        self.recipients = recipients
        self.dns = AuthDNS(cfg.dns.nameservers, cfg.auth_checks.dns_timeout_seconds,
                           cfg.auth_checks.dns_cache_size)

    async def _is_local(self, domain: str) -> bool:
        return await self.recipients.is_local(Address("postmaster", domain))

    def begin(self, *, client_ip: str, helo: str, mail_from: str) -> asyncio.Task[EnvelopeFacts]:
        """Start the SPF checks of MAIL FROM and HELO now (at the first accepted RCPT), so
        their DNS round trips overlap the DATA transfer; ``check`` takes the task.

        Whoever holds it cancels it when the transaction ends without DATA.
        """
        task = asyncio.ensure_future(envelope_facts(
            self.dns, self.cfg.auth_checks, client_ip=client_ip, helo=helo,
            mail_from=mail_from, is_local=self._is_local))
        # An error is reported by ``check``; a task left unawaited must not warn.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def check(self, *, client_ip: str, helo: str, mail_from: str, message: bytes,
                    trusted: str = "", queue_id: str = "-",
                    envelope: asyncio.Task[EnvelopeFacts] | None = None) -> AuthVerdict:
        checks = self.cfg.auth_checks
        try:
            facts = await gather(self.dns, checks, client_ip=client_ip, helo=helo,
                                 mail_from=mail_from, message=message, trusted=trusted,
                                 is_local=self._is_local, envelope=envelope)
        except TimeoutError:
            verdict = timed_out(checks.check_timeout_seconds)
        except Exception:  # a bug or hostile input we did not foresee: retry later, not pass
            log.exception(kv("auth check-error", queue_id=queue_id, ip=client_ip))
            verdict = check_failed()
        else:
            verdict = decide(facts, checks, self.cfg.hostname)
        log.info(kv("auth verdict", queue_id=queue_id, ip=client_ip, sender=f"<{mail_from}>",
                    action=verdict.action.value, rule=verdict.rule, dmarc=verdict.dmarc.value,
                    proof=verdict.sender_proof or "-",
                    reasons="; ".join(verdict.reasons)))
        return verdict
