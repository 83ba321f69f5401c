"""One instance's security: who a credential is, what it may do, and how much of it.

Routes and `watch.open_watch` ask these questions, each answered here or refused with a Problem:
- `authorize(identity, action, collection)`: may it? The answer is the per-document rule (a
  filter, with the identity's claims put in) or None when no rule applies;
- `admit_watch(identity, collection)`: may it open one more watch now? (grant, rule, rate of
  opening, concurrent caps), and the watcher that keeps those promises while it runs;
- `write_guard(identity, kind, collection, id)`: the rule a write is checked against, inside
  the store's transaction, on the state before and after;
- `may_read(identity, collection)`: may a write's answer show the document?
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from watchroute.core.problems import Problem
from watchroute.security import audit
from watchroute.security.apikeys import APIKeyVerifier, KeyWatches, api_key_store
from watchroute.security.grants import allows
from watchroute.security.guarded import GuardedWatcher, RuleWatcher
from watchroute.security.hosts import HostAllowList
from watchroute.security.identity import ANONYMOUS, Identity
from watchroute.security.leases import CapReached, Lease, WatchLeases
from watchroute.security.limits import LocalBuckets, Rate, RedisBuckets, WatchCounts, parse_rate, redis_client
from watchroute.security.refusals import TokenError, forbidden, rate_limited, unauthorized
from watchroute.security.rules import NothingFilter, Rules, restrict
from watchroute.security.shared_limits import SharedBuckets, WorkerLimits
from watchroute.settings.security import SecuritySettings

if TYPE_CHECKING:
    from watchroute.security.tokens import JWTVerifier

log = logging.getLogger("watchroute")

RATE_SETTINGS = ("rate_limit_ip", "rate_limit_identity", "watch_rate_limit_ip", "watch_rate_limit_identity")


class Security:
    def __init__(self, settings: Any) -> None:
        s: SecuritySettings = settings
        self.settings = s
        self.mode = s.auth
        self.rules = Rules.parse(s.rules, s.max_filter_length, s.max_filter_clauses)
        self.jwt: JWTVerifier | None = None
        if s.auth == "jwt":
            # Imported only by a server that reads tokens: PyJWT, cryptography and httpx are a
            # sixth of the imports of every other server's start.
            from watchroute.security.tokens import JWTVerifier

            self.jwt = JWTVerifier(s)
        self.apikeys: APIKeyVerifier | None = None
        self.key_watches: KeyWatches | None = None
        if s.auth == "apikey":
            keys = api_key_store(settings.database, getattr(settings, "postgres_schema", "watchroute"))
            self.apikeys = APIKeyVerifier(keys, s.apikey_cache_seconds)
            # Open watches learn of a revocation as soon as new requests do.
            self.key_watches = KeyWatches(keys, max(s.apikey_cache_seconds, 0.2))
        self._key_checks: asyncio.Task[None] | None = None
        self.rates: dict[str, Rate | None] = {name: parse_rate(getattr(s, name)) for name in RATE_SETTINGS}
        self.buckets: LocalBuckets | RedisBuckets | SharedBuckets = LocalBuckets()
        self.watches = WatchCounts(s.max_watches, s.max_watches_per_identity)
        # With redis_url, the caps hold across instances: each watch leases its place in Redis.
        self.leases: WatchLeases | None = None
        self._redis: Any = None
        self.allowed_origins = frozenset(s.cors_origin_list)
        self.hosts = HostAllowList(s)

    def share_with_workers(self, region: WorkerLimits, worker: int) -> None:
        """Count rates and watches together with the other worker processes of this server,
        unless Redis does that for every instance."""
        if self.settings.redis_url:
            return
        if any(self.rates.values()):
            self.buckets = region.buckets()
        if self.watches.enabled:
            s = self.settings
            self.watches = region.watch_counts(worker, s.max_watches, s.max_watches_per_identity)

    async def start(self) -> None:
        url, prefix = self.settings.redis_url, self.settings.redis_prefix
        if url and (any(self.rates.values()) or self.watches.enabled):
            self._redis = redis_client(url)
            if any(self.rates.values()):
                self.buckets = RedisBuckets(self._redis, prefix)
            if self.watches.enabled:
                self.leases = WatchLeases(self._redis, prefix, self.watches)
                self.leases.start()
        if self.key_watches is not None:
            self._key_checks = asyncio.create_task(self.key_watches.run(), name="watchroute-key-checks")

    async def stop(self) -> None:
        if self._key_checks is not None:
            self._key_checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._key_checks
        if self.leases is not None:
            await self.leases.close()
        if self._redis is not None:
            await self._redis.aclose()

    # -- who ---------------------------------------------------------------------------------

    async def authenticate(self, credential: str, address: str | None, source: str, where: str) -> Identity:
        """The identity a credential stands for; 401 (audited) when it stands for none."""
        if self.mode == "none":
            return ANONYMOUS.at(address, source)
        try:
            if self.jwt is not None:
                identity = await self.jwt.verify(credential)
            else:
                assert self.apikeys is not None
                found, why = await self.apikeys.verify(credential)
                if found is None:
                    detail = (
                        "the API key is malformed" if why == "malformed" else "unknown or revoked API key"
                    )
                    raise TokenError(unauthorized(detail), f"api key {why}")
                identity = found
        except TokenError as exc:
            method, _, path = where.partition(" ")
            audit.record(audit.AUTH_FAILED, exc.why, address=address, method=method, path=path, via=source)
            raise exc.problem from None
        return identity.at(address, source)

    # -- what --------------------------------------------------------------------------------

    def authorize(self, identity: Identity | None, action: str, collection: str, audited: bool = True) -> Any:
        """The rule `identity` sees `collection` through (None: everything); raises 401/403."""
        if identity is None:  # a route nobody resolved an identity for: only auth=none may pass
            if self.mode != "none":
                raise unauthorized("missing credentials")
            identity = ANONYMOUS
        if not identity.authenticated:
            audit.record(
                audit.DENIED, "not authenticated", address=identity.address, what=f"{action}:{collection}"
            )
            raise unauthorized("missing credentials: authenticate first")
        if not allows(identity.scopes, action, collection):
            if not audited:
                raise forbidden(f"no grant {action}:{collection} for this credential")
            audit.record(
                audit.DENIED,
                "no grant",
                subject=identity.subject,
                address=identity.address,
                what=f"{action}:{collection}",
            )
            raise forbidden(f"no grant {action}:{collection} for this credential")
        if not self.rules or allows(identity.scopes, "bypass", collection):
            return None
        return self.rules.for_identity(collection, identity.claims)

    def may_read(self, identity: Identity | None, collection: str) -> bool:
        """Whether a write's answer may carry the document: a write must not become a way to
        read, so a credential with `write` and no `read` gets the id and revisions only."""
        if identity is None or self.mode == "none":  # auth=none: every request may do everything
            return True
        return allows(identity.scopes, "read", collection)

    def write_guard(
        self, identity: Identity | None, kind: str, collection: str, id: str
    ) -> WriteGuard | None:
        rule = self.authorize(identity, "write", collection)
        return None if rule is None else WriteGuard(rule, kind, collection, id, identity)

    # -- how much ------------------------------------------------------------------------------

    async def take(self, limit: str, key: str | None) -> float:
        """Take a token from `key`'s bucket of `limit`: 0.0, or the seconds to wait."""
        rate = self.rates[limit]
        if rate is None or key is None:
            return 0.0
        bucket = f"{limit}:{key}"
        if isinstance(self.buckets, RedisBuckets):
            return await self.buckets.take(bucket, rate)
        return self.buckets.take(bucket, rate)

    async def admit_watch(self, identity: Identity | None, collection: str) -> WatchAdmission:
        rule = self.authorize(identity, "watch", collection)
        identity = identity or ANONYMOUS
        for limit, key in (
            ("watch_rate_limit_ip", identity.address),
            ("watch_rate_limit_identity", identity.key),
        ):
            wait = await self.take(limit, key)
            if wait:
                _audit_refused_watch(identity, collection, limit)
                raise rate_limited("too many watches opened; slow down", wait)
        if self.leases is None:
            self._check_count(identity, collection)
            return WatchAdmission(self, identity, rule)
        # Shared caps are taken here, atomically in Redis; the lease then goes to the watcher.
        try:
            lease = await self.leases.take(identity.key)
        except CapReached as full:
            self._refuse_watch(identity, collection, str(full))
        return WatchAdmission(self, identity, rule, lease)

    def _check_count(self, identity: Identity, collection: str) -> None:
        why = self.watches.refusal(identity.key)
        if why is not None:
            self._refuse_watch(identity, collection, why)

    def _refuse_watch(self, identity: Identity, collection: str, why: str) -> NoReturn:
        _audit_refused_watch(identity, collection, why)
        raise Problem(429, "TooManyWatches", why, headers={"Retry-After": "5"}, retry_after=5)


def _audit_refused_watch(identity: Identity, collection: str, why: str) -> None:
    what = f"watch:{collection}"
    audit.record(audit.RATE_LIMITED, why, subject=identity.subject, address=identity.address, what=what)


def rule_text(rule: Any) -> str | None:
    return None if rule is None else rule.text


@dataclass(slots=True)
class WatchAdmission:
    """A watch that may open: the filter it runs with and the watcher that keeps its promises."""

    security: Security
    identity: Identity
    rule: Any
    # Its place under the shared caps (leases.py), held from the door until the watch ends.
    lease: Lease | None = None

    @property
    def expires_at(self) -> float | None:
        return self.identity.expires_at

    def restrict(self, user_filter: Any) -> Any:
        return restrict(self.rule, user_filter)

    def release(self) -> None:
        """Give the place back when the watch does not start after all (refused for its cursor,
        say). Not left to the lease's finaliser: the refusal's traceback can keep the admission
        alive until a garbage collection, and the caller's next watch would meet the cap."""
        lease, self.lease = self.lease, None
        if lease is not None:
            lease.release()

    def watcher(self, *args: Any) -> Any:
        """A Watcher(hub, window, store, collection, id, filter, cursor), guarded when needed."""
        from watchroute.core.watcher import Watcher

        counts = self.security.watches
        identity = self.identity
        if (
            self.rule is None
            and identity.expires_at is None
            and not counts.enabled
            and identity.method == "none"
        ):
            return Watcher(*args)
        # What the watcher gives back when it ends: its slot of the caps, its key's tracking.
        releases: list[Callable[[], None]] = []
        lease, self.lease = self.lease, None
        if lease is not None:
            releases.append(lease.release)
        elif counts.enabled:
            key = identity.key
            why = counts.try_add(key)  # checked and counted at once: other workers count too
            if why is not None:
                self.security._refuse_watch(identity, args[3], why)
            releases.append(lambda: counts.remove(key))

        def release() -> None:
            for give_back in releases:
                give_back()

        kwargs: dict[str, Any] = {
            "expires_at": identity.expires_at,
            "release": release,
            "rule_text": rule_text(self.rule),
        }
        if self.rule is not None:
            watcher: GuardedWatcher = RuleWatcher(*args, rule=self.rule, **kwargs)
        else:
            watcher = GuardedWatcher(*args, **kwargs)
        key_watches = self.security.key_watches
        if key_watches is not None and identity.method == "apikey":
            releases.append(key_watches.add(identity.claims["key_id"], watcher))
        return watcher


class WriteGuard:
    """A write's rule, checked inside the store's transaction (store/ops.py)."""

    __slots__ = ("collection", "id", "identity", "kind", "rule")

    def __init__(self, rule: Any, kind: str, collection: str, id: str, identity: Identity | None) -> None:
        self.rule = rule
        self.kind = kind
        self.collection = collection
        self.id = id
        self.identity = identity

    def current(self, data: dict[str, Any]) -> bool:
        """Whether the state the write replaces is one the writer can see. One it cannot see is,
        to the writer, absent: the store answers as it would for a free id (store/ops.py)."""
        if self.rule.matches(data):
            return True
        self._audit("current state hidden by rule")
        return False

    def new(self, data: dict[str, Any]) -> None:
        """The state the write leaves must be one the writer can still see."""
        if self.rule.matches(data):
            return
        self._audit("new state hidden by rule")
        raise self.violation()

    def violation(self) -> Problem:
        # One answer for a state the rule would hide and for an id a hidden document holds:
        # word for word the same, so that the caller cannot tell which it was.
        if isinstance(self.rule, NothingFilter):
            detail = "the rule of this collection hides every document from this credential"
        else:
            detail = (
                f"the rule of this collection does not let this credential write that state "
                f"to {self.collection}/{self.id}"
            )
        return forbidden(detail, "RuleViolation")

    def _audit(self, why: str) -> None:
        identity = self.identity
        audit.record(
            audit.DENIED,
            why,
            subject=identity.subject if identity else None,
            address=identity.address if identity else None,
            what=f"write:{self.collection}/{self.id}",
        )
