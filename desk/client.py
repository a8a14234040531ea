"""A small httpx client for the daemon's control API (desk/api.py).

Used by the one-shot commands (``desk halt``, ``desk resume``, ``desk
status``) and by ``desk attach``. The token travels only in the
``X-OPS-TOKEN`` header; it is never part of a URL, an exception message or
a ``repr``.

Errors:
    :class:`DaemonUnreachable`: nothing answered (connection refused, DNS,
        timeout, connection reset) — the caller may fall back (the HALT
        file) or report "down" (exit 1 for ``desk status``).
    :class:`DaemonRefused`: the daemon answered with a 4xx/5xx status;
        ``status_code`` and ``detail`` (its JSON ``detail`` or text).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx

#: the default daemon URL (``desk run --headless --api-port 8002``)
DEFAULT_URL = "http://127.0.0.1:8002"
#: the file in the state dir where a serving daemon writes its API's URL
#: (read by ``desk status/halt/resume --state-dir`` when no ``--url`` is given)
API_URL_FILE = "api_url"
#: the HTTP header that carries the operator token
TOKEN_HEADER = "X-OPS-TOKEN"
#: the environment variable that carries the operator token
TOKEN_ENV = "OPS_TOKEN"


class DaemonUnreachable(Exception):
    """Nothing answered at the daemon's URL (refused, timeout, reset)."""


class DaemonRefused(Exception):
    """The daemon answered with an error status.

    Attributes:
        status_code: the HTTP status (401 no token, 403 wrong token, 409
            not applicable, 422 bad body, 5xx a failure in the daemon).
        detail: the error's ``detail`` (or the response text), at most
            500 characters.
    """

    def __init__(self, status_code: int, detail: str) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {detail}")


class TokenError(Exception):
    """No usable token (missing, empty, or a token file readable by others)."""


def read_token_file(path: Path) -> str:
    """The token stored in ``path`` (surrounding whitespace stripped).

    Raises:
        TokenError: the file is missing, unreadable, empty, or readable or
            writable by group or others (like ssh with a private key).
    """
    try:
        st = os.stat(path)
        text = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenError(f"token file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"token file {path}: cannot read: {exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"token file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
                         f"chmod 600 {path}")
    if not text:
        raise TokenError(f"token file {path}: empty")
    return text


def resolve_client_token(token_file: Path | None, state_dir: Path | None,
                         environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The token a one-shot command sends, and where it came from.

    Order: ``OPS_TOKEN`` in the environment, then ``--token-file``, then
    ``<state_dir>/ops_token`` when that file exists. Returns ``(None,
    explanation)`` when there is none.

    Raises:
        TokenError: a given ``--token-file`` (or the state dir's file)
            cannot be used.
    """
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV], f"${TOKEN_ENV}"
    if token_file is not None:
        return read_token_file(token_file), str(token_file)
    if state_dir is not None and (state_dir / "ops_token").exists():
        f = state_dir / "ops_token"
        return read_token_file(f), str(f)
    where = f" and no {state_dir / 'ops_token'}" if state_dir is not None else ""
    return None, f"no token: set ${TOKEN_ENV} or pass --token-file{where}"


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        d = body.get("detail", body) if isinstance(body, dict) else body
        text = d if isinstance(d, str) else json.dumps(d)
    except Exception:  # noqa: BLE001 - not JSON: the text
        text = resp.text
    return str(text)[:500]


class DaemonClient:
    """Synchronous client for the one-shot commands.

    Args:
        url: the daemon's base URL (``http://127.0.0.1:8002``).
        token: the operator token, or None (only ``/health`` and
            ``/metrics`` then work).
        timeout: seconds for connect and each read (default 5).
        transport: an httpx transport (tests), or None for the network.
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {TOKEN_HEADER: token} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport,
                                  trust_env=False)

    def __repr__(self) -> str:
        return f"DaemonClient({self.url!r})"  # never the token

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; returns the decoded JSON body (or the text).

        Raises:
            DaemonUnreachable: nothing answered.
            DaemonRefused: an error status.
        """
        try:
            resp = self._http.request(method, path, json=body)
        except (httpx.TransportError, OSError) as exc:
            raise DaemonUnreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise DaemonRefused(resp.status_code, _detail(resp))
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def health(self) -> Any:
        """``GET /health`` (no token needed)."""
        return self.request("GET", "/health")

    def status(self) -> dict[str, Any]:
        """``GET /status``: the trading state, halted venues, counts."""
        return self.request("GET", "/status")

    def kill(self, mode: str = "HALT", reason: str = "") -> Any:
        """``POST /kill`` with ``{"enabled": false, "mode", "reason"}``:
        HALT (cancel the desk's working orders), REDUCE (reduce-only) or
        FLATTEN (halt, then close every position)."""
        return self.request("POST", "/kill", {"enabled": False, "mode": mode, "reason": reason})

    def resume(self, reason: str) -> Any:
        """``POST /resume`` with ``{"reason"}``: back to ACTIVE."""
        return self.request("POST", "/resume", {"reason": reason})

    def snapshot(self) -> Any:
        """``GET /snapshot``: what an attached TUI needs to paint at once."""
        return self.request("GET", "/snapshot")


class AsyncDaemonClient:
    """The same calls for asyncio code (``desk attach``); same arguments
    and errors as :class:`DaemonClient` (``transport`` is an async one)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {TOKEN_HEADER: token} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport,
                                       trust_env=False)

    def __repr__(self) -> str:
        return f"AsyncDaemonClient({self.url!r})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; returns the decoded JSON body (or the text).

        Raises:
            DaemonUnreachable: nothing answered.
            DaemonRefused: an error status.
        """
        try:
            resp = await self._http.request(method, path, json=body)
        except (httpx.TransportError, OSError) as exc:
            raise DaemonUnreachable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise DaemonRefused(resp.status_code, _detail(resp))
        try:
            return resp.json()
        except ValueError:
            return resp.text

    async def status(self) -> Any:
        """``GET /status``."""
        return await self.request("GET", "/status")

    async def snapshot(self) -> Any:
        """``GET /snapshot``."""
        return await self.request("GET", "/snapshot")

    async def kill(self, mode: str = "HALT", reason: str = "") -> Any:
        """``POST /kill`` (see :meth:`DaemonClient.kill`)."""
        return await self.request("POST", "/kill", {"enabled": False, "mode": mode, "reason": reason})

    async def resume(self, reason: str) -> Any:
        """``POST /resume``."""
        return await self.request("POST", "/resume", {"reason": reason})
