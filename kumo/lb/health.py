"""A member's health from its checks, as Octavia counts: up after `max_retries` checks in a row succeeded,
down after `max_retries_down` in a row failed. A member no check has judged yet counts as up (kumo.topology.
lbstatus), so its first `max_retries_down` failures take it down and successes keep it up."""

from __future__ import annotations

from dataclasses import dataclass

from kumo.lb.checks import Monitor


@dataclass
class MemberHealth:
    status: str = "up"
    detail: str | None = None
    successes: int = 0
    failures: int = 0

    def observe(self, healthy: bool, detail: str, monitor: Monitor) -> bool:
        """Count one check; True if (status, detail) changed."""
        before = (self.status, self.detail)
        if healthy:
            self.successes, self.failures = self.successes + 1, 0
            if self.status == "down" and self.successes >= monitor.max_retries:
                self.status = "up"
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.status == "up" and self.failures >= monitor.max_retries_down:
                self.status = "down"
        if self.status == "up" or not healthy:  # (a down member shows why it is down until it is up again)
            self.detail = detail
        return (self.status, self.detail) != before
