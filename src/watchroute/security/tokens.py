"""JWT bearer tokens, verified with PyJWT.

Keys: a shared secret (HS256), a PEM public key (RS256, ES256 or EdDSA, by the key's type), or
a JWKS URL (keys fetched, cached and refreshed). Each key is used only with the algorithms of
its own family, chosen by the key and never by the token: a token that says `alg: none`, or
`HS256` to a server holding an RSA public key (the classic confusion, where the public key is
used as an HMAC secret), finds no key and is refused before any signature is computed.

Checked: signature, `exp` (required), `nbf`, `iss` and `aud` when configured (a token with an
`aud` is refused when none is configured: it was meant for another service), `sub` (required:
limits and rules are per subject), with `jwt_leeway` seconds of clock skew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from watchroute.core.problems import Problem
from watchroute.security.grants import scopes_of
from watchroute.security.identity import Identity
from watchroute.security.refusals import TokenError, token_expired, unauthorized
from watchroute.settings.security import SecuritySettings

log = logging.getLogger("watchroute")

FAMILIES = {
    "HS": ("HS256", "HS384", "HS512"),
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}
# A JWKS is refetched for an unknown `kid` at most this often, so that tokens with made-up
# key ids cannot make the server hammer the issuer.
JWKS_MIN_REFRESH_SECONDS = 10.0


def _pem_family(path: str) -> tuple[Any, str]:
    with open(path, "rb") as f:
        key = load_pem_public_key(f.read())
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "EC"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "OKP"
    raise ValueError(f"{path}: unsupported public key type {type(key).__name__}")


class JWKSKeys:
    """A JWKS URL's keys, cached for `ttl` seconds and refetched for an unknown key id."""

    def __init__(self, url: str, ttl: float) -> None:
        self.url = url
        self.ttl = ttl
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched = -float("inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched > self.ttl
        unknown = kid not in self._keys and now - self._fetched > min(JWKS_MIN_REFRESH_SECONDS, self.ttl)
        if stale or unknown:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched < 1.0:  # another request just did
                return
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self.url)
                    response.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(response.json())
            except Exception as exc:  # keep the keys we have: the issuer may be down a moment
                log.warning("cannot fetch the JWKS from %s: %s", self.url, exc)
                self._fetched = time.monotonic() - self.ttl + JWKS_MIN_REFRESH_SECONDS
                if not self._keys:
                    raise TokenError(
                        Problem(503, "KeysUnavailable", "the token signing keys cannot be fetched"),
                        "jwks unavailable",
                    ) from None
                return
            keys: dict[str | None, jwt.PyJWK] = {k.key_id: k for k in keyset.keys}
            if len(keyset.keys) == 1:  # a lone key also serves tokens without a `kid`
                keys.setdefault(None, keyset.keys[0])
            self._keys = keys
            self._fetched = time.monotonic()


class JWTVerifier:
    def __init__(self, settings: SecuritySettings) -> None:
        self.settings = settings
        self.accepted = {a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()}
        self.secret = settings.jwt_secret.encode() if settings.jwt_secret else None
        self.public_key: Any = None
        self.public_family: str | None = None
        if settings.jwt_public_key:
            self.public_key, self.public_family = _pem_family(settings.jwt_public_key)
        self.jwks = JWKSKeys(settings.jwks_url, settings.jwks_cache_seconds) if settings.jwks_url else None

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.accepted or alg == "none":
            raise TokenError(unauthorized("the token's algorithm is not accepted"), f"alg {alg!r}")
        if alg in FAMILIES["HS"]:
            if self.secret is None:
                raise TokenError(
                    unauthorized("the token's algorithm is not accepted"), f"alg {alg} no secret"
                )
            return self.secret, alg
        if self.public_family is not None and alg in FAMILIES[self.public_family]:
            return self.public_key, alg
        if self.jwks is not None:
            kid = header.get("kid")
            jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
            if jwk is None:
                raise TokenError(unauthorized("the token's signing key is unknown"), f"kid {kid!r}")
            # PyJWK refuses a JWK without `kty`, but types `key_type` as optional.
            if jwk.key_type == "oct" or alg not in FAMILIES.get(jwk.key_type or "", ()):
                raise TokenError(unauthorized("the token's algorithm is not accepted"), f"alg {alg} for jwk")
            return jwk.key, alg
        raise TokenError(unauthorized("the token's algorithm is not accepted"), f"alg {alg} no key")

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError(unauthorized("the token is malformed"), "malformed") from None
        key, alg = await self._key_for(header)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError(token_expired(), "expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError(unauthorized("the token is not valid yet", "TokenNotYetValid"), "nbf") from None
        except jwt.InvalidIssuerError:
            raise TokenError(unauthorized("the token's issuer is not accepted"), "issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenError(unauthorized("the token's audience is not accepted"), "audience") from None
        except jwt.InvalidSignatureError:
            raise TokenError(unauthorized("the token's signature does not verify"), "signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(unauthorized(f"the token has no {exc.claim!r} claim"), "claim") from None
        except jwt.PyJWTError as exc:
            raise TokenError(
                unauthorized("the token is not valid"), f"invalid: {type(exc).__name__}"
            ) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError(unauthorized("the token's 'sub' must be a string"), "sub")
        if not _unicode(claims):
            # JSON escapes can spell a lone surrogate ("\ud800"), which PyJWT decodes; such a
            # subject or claim cannot be encoded later (a rule's $sub, a limit's key, the audit log).
            raise TokenError(
                unauthorized("the token's claims hold text that is not valid Unicode"), "surrogate"
            )
        exp = claims["exp"]
        expires_at = float(exp) + s.jwt_leeway if isinstance(exp, int | float) else None
        return Identity(subject, scopes_of(claims), claims, expires_at, "jwt")


def _unicode(value: Any) -> bool:
    """Whether every string in `value` (a token's claims, keys included) encodes as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_unicode(k) and _unicode(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_unicode(v) for v in value)
    return True
