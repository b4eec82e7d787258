"""Who may use the dashboard, and which requests may change runs.

The threat model: the dashboard can signal, cancel and retry runs, and shows
their arguments and results. So:

- **Bound to loopback by default**; another ``--host`` needs an access token
  (:func:`check_bind` refuses to start without one). With a token, every request
  must carry it: an ``Authorization: Bearer`` header, or the cookie set when the
  page is first opened with ``?token=`` (the token then leaves the address bar,
  and no ``Referer`` ever carries it).
- **DNS rebinding**: a page of another site whose name resolves to 127.0.0.1
  reaches a loopback server with its own name in ``Host``. Without a token,
  only the loopback names are accepted in ``Host``.
- **Cross-site requests**: every state-changing request is a POST carrying a
  secret made when the server starts (a hidden field of the dashboard's own
  forms, which another site cannot read), and a POST whose ``Origin`` is not
  the dashboard's own, or that the browser says is cross-site, is refused.
  The token cookie is ``SameSite=Strict`` as well.
- **Escaping**: the pages escape every text (see views.py); the
  Content-Security-Policy below forbids inline and third-party scripts as a
  second wall, and nothing is fetched from another origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import quote

import attrs
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

#: The cookie that carries the access token once the page was opened with ``?token=``.
COOKIE = "durable_ui_token"

#: No script but the dashboard's own file, no frame, nothing fetched elsewhere. Inline styles
#: stay allowed: the timeline's SVG chart (shared with ``show --html``) uses them.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": Chromium then sends "Origin: null" with the forms, which the
    # cross-site check refuses. Other sites get no referrer either way.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class UiSetupError(ValueError):
    """``durable ui`` cannot start as asked (a public address without a token...)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse an address other machines can reach without an access token.

    Raises:
        UiSetupError: ``host`` is not a loopback address and there is no token.
    """
    if token is not None and len(token) < 16:
        raise UiSetupError(
            "the access token is too short to protect runs: use 16 characters or more, e.g. "
            "--token $(python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    if not is_loopback(host) and token is None:
        raise UiSetupError(
            f"--host {host} lets other machines reach the dashboard, which can signal, cancel and "
            "retry runs: give it an access token (--token TOKEN or DURABLE_UI_TOKEN), or keep the "
            "default --host 127.0.0.1"
        )


#: The names a dashboard without a token answers to in ``Host`` (any port: the name is what a
#: rebinding site cannot fake, and ``--port 0`` learns its port only when bound).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_name(host: str) -> str:
    """``localhost`` of ``localhost:8080``, ``[::1]`` of ``[::1]:8080``."""
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and (not name.startswith("[") or name.endswith("]")) else host


@attrs.frozen
class Guard:
    """The checks every request goes through (see the module's docstring).

    Attributes:
        token: the access token, or None (loopback only).
        hosts: the names accepted in ``Host`` (any port); None: any (a token protects the server).
        csrf: the secret every state-changing form carries.
    """

    token: str | None
    hosts: frozenset[str] | None
    csrf: str = attrs.Factory(lambda: secrets.token_urlsafe(32))

    def refusal(self, request: Request) -> Response | None:
        """The response refusing ``request``, or None to serve it."""
        host = request.headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return _refuse(400, f"this dashboard does not answer to the name {host!r} in Host")
        if self.token is None:
            return None
        given = request.query_params.get("token")
        if given is not None and request.method == "GET":
            return self._enter(request, given)
        if _same(self._presented(request), self.token):
            return None
        return _refuse(
            401,
            "this dashboard needs its access token: open it with ?token=TOKEN (the --token or "
            "DURABLE_UI_TOKEN it was started with), or send Authorization: Bearer TOKEN",
        )

    def _presented(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def _enter(self, request: Request, given: str) -> Response:
        """``?token=``: right, the cookie is set and the token leaves the address; else refused."""
        if not _same(given, self.token or ""):
            return _refuse(401, "wrong access token")
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in kept)
        response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        secure = request.url.scheme == "https"
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict", secure=secure, path="/")
        return response

    def cross_site(self, request: Request, form_secret: object) -> str | None:
        """Why a state-changing request must be refused as cross-site, or None if it is ours."""
        if not isinstance(form_secret, str) or not _same(form_secret, self.csrf):
            return "the form's secret is missing or wrong (reload the dashboard's page and try again)"
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "the browser says this request comes from another site"
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is not None and origin != own:
            return f"the request comes from another origin ({origin!r}, not {own!r})"
        return None


def _same(given: str | None, expected: str) -> bool:
    """Compared in constant time: how long a wrong token takes tells nothing."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _quote(text: str) -> str:
    return quote(text, safe="")


def _refuse(status: int, why: str) -> Response:
    return PlainTextResponse(f"refused: {why}\n", status_code=status, headers=HEADERS)
