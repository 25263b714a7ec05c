"""Prometheus metrics, fed by the events the servers and the queue already log.

One ``Metrics`` per running server, each with its own registry (not the
library's global one), so that several servers in one process (tests) keep
separate counts. The servers, the intake and the queue manager call the
event methods below at the points where they write their log lines; the
protocol machines never see this module. Label values come from small fixed
sets (listener kinds, policy rule names, outcomes), never from client input,
so the number of series stays bounded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a loopback hand-over (milliseconds) to a slow remote MX (minutes), and
# for queued mail that waited for retries, to days.
DELIVERY_BUCKETS = (0.05, 0.25, 1, 5, 30, 120, 600, 3600, 4 * 3600, 86400, 5 * 86400)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class Metrics:
    """Every series postwarden exports; the methods are the events that move them."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"postwarden_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, label: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"postwarden_{name}", doc, [label], buckets=buckets, registry=r)

        self._connections = counter("connections", "Connections admitted", "listener", "service")
        self._refused = counter("connections_refused", "Connections refused at the door (limits)",
                                "listener", "service")
        self._sessions = Gauge("postwarden_sessions", "Sessions open now, by service",
                               ["service"], registry=r)
        self._accepted = counter("messages_accepted", "Messages accepted (250 after DATA)",
                                 "listener")
        self._message_refused = counter("messages_refused", "Messages refused, by refusing rule",
                                        "listener", "rule")
        self._relay = counter("relay_decisions", "Recipient (relay) decisions", "verdict", "rule")
        self._auth = counter("auth", "Login attempts (ok, failed, throttled...)",
                             "service", "result")
        self.queue_messages = Gauge(
            "postwarden_queue_messages", "Messages in the outbound queue (at scrape time)",
            registry=r)
        self.queue_oldest = Gauge(
            "postwarden_queue_oldest_age_seconds",
            "Age of the oldest message in the outbound queue (0 when empty)", registry=r)
        self._deliveries = counter("deliveries", "Delivery attempts per recipient", "outcome")
        self._delivery_latency = histogram(
            "delivery_latency_seconds", "From reception to this delivery attempt's result",
            "outcome", DELIVERY_BUCKETS)
        self._store = histogram("store_latency_seconds", "Store calls as the servers wait for them",
                                "operation", STORE_BUCKETS)

    # --- events -------------------------------------------------------------------

    def connection_opened(self, listener: str, service: str) -> None:
        self._connections.labels(listener, service).inc()
        self._sessions.labels(service).inc()

    def connection_closed(self, service: str) -> None:
        self._sessions.labels(service).dec()

    def connection_refused(self, listener: str, service: str) -> None:
        self._refused.labels(listener, service).inc()

    def message_accepted(self, listener: str) -> None:
        self._accepted.labels(listener).inc()

    def message_refused(self, listener: str, rule: str) -> None:
        self._message_refused.labels(listener, rule).inc()

    def relay_decision(self, verdict: str, rule: str) -> None:
        self._relay.labels(verdict, rule).inc()

    def auth(self, service: str, result: str) -> None:
        self._auth.labels(service, result).inc()

    def delivery(self, outcome: str, seconds: float) -> None:
        self._deliveries.labels(outcome).inc()
        self._delivery_latency.labels(outcome).observe(seconds)

    def store_call(self, operation: str, seconds: float) -> None:
        self._store.labels(operation).observe(seconds)

    def queue(self, messages: int, oldest_age: float) -> None:
        self.queue_messages.set(messages)
        self.queue_oldest.set(oldest_age)

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)
