"""Sign-in for pages: GET /login shows the form; POST /login exchanges a user name and a password (or one of
the user's tokens) for a session cookie; POST /logout ends the session.

The session is a token of kind 'session' (geo.auth), so it expires, is revoked and is audited like every
token. It travels only in an HttpOnly, SameSite=Strict cookie (Secure when the request came over TLS), never in
a URL. Requests that change state with it also carry the session's CSRF value (api.deps.csrf_value) in
X-CSRF-Token; pages get that value in their HTML. The form itself carries a per-visit anti-forgery value that
must match a cookie of the same visit. Failed attempts are limited per client address and per user name."""

import math
import secrets
import time
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.deps import SESSION_COOKIE, SettingsDep, SyncEngine
from geo import auth
from maps import signin as page
from maps.i18n import lang_of

# Pages for people, like /docs: outside the API's schema (their errors are the form again, in HTML), and in the
# role matrix by name (tests/test_role_matrix.py).
router = APIRouter(tags=["sign-in"])
FORM_COOKIE = "wangge_form"
HOME = "/maps/incidents"


def failure_limiter() -> MovingWindowRateLimiter:
    """The app's count of failed sign-ins (create_app keeps one in app.state), held in this worker."""
    return MovingWindowRateLimiter(MemoryStorage())


def _local(next_path: str | None) -> str:
    """`next_path` if it is a path on this site, else the home page (no open redirects)."""
    if not next_path or not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
        return HOME
    parts = urlsplit(next_path)
    return HOME if parts.scheme or parts.netloc else next_path


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _form(request: Request, lang: str, next_path: str, status: int = 200, message: str | None = None,
          name: str = "", headers: dict | None = None) -> HTMLResponse:
    key = secrets.token_urlsafe(24)
    reply = HTMLResponse(page.build(lang, next_path, key, message, name), status_code=status, headers=headers)
    reply.set_cookie(FORM_COOKIE, key, max_age=3600, path="/login", httponly=True, samesite="strict",
                     secure=_secure(request))
    return reply


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def sign_in_page(request: Request,
                 next: Annotated[str | None, Query(max_length=2000, description="the page to open after")] = None,
                 lang: Annotated[str | None, Query(max_length=5, description="zh (default) or en")] = None,
                 ) -> HTMLResponse:
    """The sign-in form, in Chinese (or English with ?lang=en)."""
    return _form(request, lang_of(lang), _local(next))


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
def sign_in(request: Request, settings: SettingsDep, engine: SyncEngine,
            name: Annotated[str, Form(min_length=1, max_length=200)],
            secret: Annotated[str, Form(min_length=1, max_length=500)],
            form_key: Annotated[str, Form(max_length=100)] = "",
            next: Annotated[str | None, Form(max_length=2000)] = None,
            lang: Annotated[str | None, Form(max_length=5)] = None) -> Response:
    """Check the user name and password (or token) and set the session cookie: 303 on to `next`; else the form
    again with 400 (a stale or forged form), 401 (wrong name or password) or 429 (too many failures)."""
    language, next_path = lang_of(lang), _local(next)
    expected = request.cookies.get(FORM_COOKIE)
    if not expected or not secrets.compare_digest(expected, form_key):
        return _form(request, language, next_path, 400, "sign_in_again", name)  # a forged or stale form
    failures: MovingWindowRateLimiter = request.app.state.sign_in_failures
    address = request.client.host if request.client else "?"
    limit = parse(settings.sign_in_failures)
    keys = ("address:" + address, "name:" + name.casefold())
    for key in keys:
        if not failures.test(limit, "sign-in", key):
            reset = failures.get_window_stats(limit, "sign-in", key).reset_time
            wait = str(max(1, math.ceil(reset - time.time())))
            return _form(request, language, next_path, 429, "sign_in_limited", name, {"Retry-After": wait})
    with engine.begin() as conn:  # a failure is audited too, so this commits either way
        token = auth.sign_in(conn, name, secret, address, settings.session_lifetime())
    if token is None:
        for key in keys:
            failures.hit(limit, "sign-in", key)
        return _form(request, language, next_path, 401, "sign_in_failed", name)
    reply = RedirectResponse(next_path, status_code=303)
    reply.set_cookie(SESSION_COOKIE, token, max_age=int(settings.session_lifetime().total_seconds()), path="/",
                     httponly=True, samesite="strict", secure=_secure(request))
    reply.delete_cookie(FORM_COOKIE, path="/login")
    return reply


@router.post("/logout", status_code=303, response_class=Response, include_in_schema=False)
def sign_out(request: Request, engine: SyncEngine) -> Response:
    """End this browser's session: its token is revoked at once, in every worker, and the cookie cleared."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with engine.begin() as conn:
            auth.sign_out(conn, token)
        request.app.state.token_cache.clear()  # this worker at once; the others when they hear the NOTIFY
    reply = RedirectResponse("/login", status_code=303)
    reply.delete_cookie(SESSION_COOKIE, path="/")
    return reply
