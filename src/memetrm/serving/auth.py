"""Bearer tokens: who may review, and (optionally) who may score.

A token travels only as ``Authorization: Bearer <token>``, never in a URL, so no access log
line carries it (uvicorn logs no headers, and query strings are redacted anyway). Every token is
compared with ``hmac.compare_digest``, all of them on every request, so neither the answer nor
its timing tells how much of a guess was right or which reviewer it was close to.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memetrm.errors import ConfigError

#: a token shorter than this is refused: it could be guessed
MIN_TOKEN_CHARS = 16
#: the reviewer a lone ``--review-token`` stands for
DEFAULT_REVIEWER = "reviewer"


class Tokens:
    """Tokens and the reviewer (or client) each stands for."""

    def __init__(self, names: dict[str, str]) -> None:
        for token in names:
            if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
                raise ConfigError(f"a token must be at least {MIN_TOKEN_CHARS} printable characters "
                                  f"without spaces (one of {len(names)} is not)")
        self._tokens = [(t.encode(), name) for t, name in names.items()]

    @classmethod
    def of(cls, token: str | None = None, file: Path | None = None) -> Tokens | None:
        """From one token (the reviewer ``reviewer``) and/or a tokens file; None without either."""
        names = {token: DEFAULT_REVIEWER} if token else {}
        if file is not None:
            names.update(read_tokens(file))
        return cls(names) if names else None

    def who(self, authorization: str | None) -> str | None:
        """The name a ``Bearer`` authorization header's token stands for, or None."""
        scheme, _, given = (authorization or "").partition(" ")
        given_bytes = given.strip().encode()
        found = None
        for token, name in self._tokens:  # every token, whatever matched: constant time
            if hmac.compare_digest(token, given_bytes):
                found = name
        return found if scheme.lower() == "bearer" else None

    def require(self, request: Request) -> str:
        """FastAPI dependency: the caller's name, or 401."""
        name = self.who(request.headers.get("authorization"))
        if name is None:
            raise HTTPException(401, "a valid token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        return name


def read_tokens(path: Path) -> dict[str, str]:
    """A tokens file: one ``<token> <reviewer name>`` per line; blank lines and lines starting
    with ``#`` are skipped. A bad line is a ``ConfigError`` naming its number, never its token."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the tokens file ({e})") from e
    names: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        token, _, name = line.strip().partition(" ")
        if not name.strip():
            raise ConfigError(f"{path}:{n}: expected '<token> <reviewer name>'")
        if token in names:
            raise ConfigError(f"{path}:{n}: this token is already given on another line")
        names[token] = name.strip()
    if not names:
        raise ConfigError(f"{path}: no tokens")
    return names


class RequireToken:
    """ASGI middleware: requests under ``prefix`` need one of ``tokens`` (401 otherwise), but
    for the paths under ``exempt`` (which check their own tokens)."""

    def __init__(self, app: ASGIApp, tokens: Tokens, prefix: str = "/v1/",
                 exempt: tuple[str, ...] = ("/v1/review",)) -> None:
        self.app, self.tokens, self.prefix, self.exempt = app, tokens, prefix, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        exempt = any(path == e or path.startswith(e + "/") for e in self.exempt)
        if scope["type"] == "http" and path.startswith(self.prefix) and not exempt:
            headers = dict(scope["headers"])
            if self.tokens.who(headers.get(b"authorization", b"").decode("latin-1")) is None:
                resp = JSONResponse({"detail": "a valid token is required (Authorization: Bearer "
                                               "<token>)"}, 401, {"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)
