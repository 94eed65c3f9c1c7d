"""Sign-in for pages: a password (argon2) or a token in, an HttpOnly SameSite=Strict session cookie out; pages
never carry a token, ?access_token= is gone, changes made with the cookie need the page's CSRF value, sign-out
revokes the session at once, and failed attempts are limited."""

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import lean, make_token

AREA = "110102001"


@pytest.fixture(scope="module")
def app(settings):
    """One app (its pool lives on the test client's loop), opened by one browser at a time."""
    from api.app import create_app

    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def browser(app: TestClient) -> TestClient:
    """A fresh browser: an empty cookie jar, following no redirects by itself."""
    app.cookies.clear()
    return app


@pytest.fixture(scope="module")
def planner(engine):
    from geo.auth import create_user, set_password

    with engine.begin() as conn:
        user_id = create_user(conn, "signin-planner", "planner", AREA)
        set_password(conn, user_id, "correct horse battery")
    return "signin-planner"


def sign_in(client: TestClient, name: str, secret: str, next_path: str = "/maps/grids?area=110102001",
            site: str = ""):
    form = client.get(site + "/login", params={"next": next_path})
    assert form.status_code == 200 and "登录" in form.text
    key = re.search(r'name="form_key" value="([^"]+)"', form.text).group(1)
    return client.post(site + "/login", data={"name": name, "secret": secret, "form_key": key, "next": next_path})


def test_a_password_signs_in_with_a_strict_http_only_cookie_and_pages_carry_no_token(app, planner, engine):
    client = browser(app)
    reply = sign_in(client, planner, "correct horse battery")
    assert reply.status_code == 303 and reply.headers["location"] == "/maps/grids?area=110102001"
    cookie = reply.headers["set-cookie"]
    assert "wangge_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http here; see the TLS test below
    session = client.cookies["wangge_session"]
    page = client.get("/maps/grids?area=110102001")
    assert page.status_code == 200, page.text
    assert session not in page.text and "access_token" not in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "same-origin"
    assert client.get("/incidents", params={"area": AREA}).status_code == 403  # a planner, signed in
    with engine.connect() as conn:
        kind, method = conn.execute(text(
            "SELECT t.kind, a.detail->>'method' FROM audit_log a JOIN api_tokens t ON t.id = "
            "CAST(a.detail->>'token_id' AS int) WHERE a.action = 'auth.sign_in' ORDER BY a.id DESC LIMIT 1")).one()
    assert (kind, method) == ("session", "password")


def test_a_token_signs_in_too_and_the_cookie_is_secure_over_tls(app, engine):
    token = make_token(engine, "supervisor", AREA)
    with engine.connect() as conn:
        name = conn.execute(text("SELECT u.name FROM users u JOIN api_tokens t ON t.user_id = u.id "
                                 "WHERE t.prefix = :p"), {"p": token[:10]}).scalar_one()
    client = browser(app)
    site = "https://testserver"
    reply = sign_in(client, name, token, "/maps/incidents?area=110102001", site)
    assert reply.status_code == 303 and "Secure" in reply.headers["set-cookie"]
    assert client.get(site + "/maps/incidents?area=110102001").status_code == 200
    assert client.get(site + "/incidents", params={"area": AREA, "limit": 1}).status_code == 200
    # the lean path's routes too: with no bearer header, the cookie is the route's to read
    assert client.get(site + "/grids/at", params={"lon": 116.3655, "lat": 39.9127}).status_code in (200, 404)
    assert lean(client, {"Cookie": f"wangge_session={token}"}, "/grids/at", "lon=116.3655&lat=39.9127") is None


def test_wrong_secrets_forged_forms_and_open_redirects_are_refused(app, planner, engine):
    client = browser(app)
    wrong = sign_in(client, planner, "wrong password")
    assert wrong.status_code == 401 and "用户名或密码错误" in wrong.text and "wangge_session" not in client.cookies
    forged = browser(app).post("/login", data={"name": planner, "secret": "correct horse battery",
                                               "form_key": "made-up"})
    assert forged.status_code == 400 and "wangge_session" not in forged.headers.get("set-cookie", "")
    away = sign_in(browser(app), planner, "correct horse battery", "//evil.example/x")
    assert away.status_code == 303 and away.headers["location"] == "/maps/incidents"
    with engine.connect() as conn:
        failed = conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'auth.sign_in_failed' "
                                   "AND detail->>'name' = :n"), {"n": planner}).scalar_one()
    assert failed >= 1


def test_access_token_in_the_url_is_no_credential(client, admin_headers):
    token = admin_headers["Authorization"].split()[1]
    assert client.get("/incidents", params={"access_token": token, "limit": 1}).status_code == 401
    page = client.get("/maps/grids", params={"area": "110102001", "access_token": token},
                      headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2Fmaps%2Fgrids")


def test_changes_with_the_cookie_need_the_pages_csrf_value(app, planner):
    from api.deps import csrf_value

    client = browser(app)
    assert sign_in(client, planner, "correct horse battery").status_code == 303
    refused = client.post("/plans", json={"name": "csrf"})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]["message"]
    assert client.post("/plans", json={"name": "csrf"}, headers={"X-CSRF-Token": "0" * 32}).status_code == 403
    csrf = csrf_value(client.cookies["wangge_session"])
    made = client.post("/plans", json={"name": "csrf"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    page = client.get(f"/maps/plans/{made.json()['id']}", params={"area": "110102001001"})
    assert page.status_code == 200 and csrf in page.text and client.cookies["wangge_session"] not in page.text
    assert client.delete(f"/plans/{made.json()['id']}", headers={"X-CSRF-Token": csrf}).status_code == 204


def test_sign_out_revokes_the_session_at_once(app, planner, engine):
    client = browser(app)
    assert sign_in(client, planner, "correct horse battery").status_code == 303
    session = client.cookies["wangge_session"]
    assert client.get("/plans").status_code == 200
    out = client.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.set("wangge_session", session)  # a copy of the cookie kept elsewhere
    assert client.get("/plans").status_code == 401
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'auth.sign_out'")).scalar_one() >= 1


def test_failed_attempts_are_limited_with_retry_after(settings, engine):
    from geo.auth import create_user, set_password

    with engine.begin() as conn:
        set_password(conn, create_user(conn, "signin-limited", "supervisor", AREA), "a long enough one")
    from api.app import create_app

    few = settings.model_copy(update={"sign_in_failures": "3 per 15 minutes"})
    with TestClient(create_app(few), follow_redirects=False) as client:  # its own count of failures
        for _ in range(3):
            assert sign_in(client, "signin-limited", "nope nope").status_code == 401
        limited = sign_in(client, "signin-limited", "a long enough one")  # even the right one, for a while
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "尝试次数过多" in limited.text


def test_the_page_is_english_on_request_and_short_passwords_are_refused(app, engine):
    from geo.auth import create_user, set_password
    from geo.errors import InvalidInput

    page = browser(app).get("/login", params={"lang": "en"})
    assert page.status_code == 200 and "Sign in" in page.text and "Password or token" in page.text
    with engine.begin() as conn, pytest.raises(InvalidInput, match="at least 8"):
        set_password(conn, create_user(conn, "signin-short", "supervisor", AREA), "short")


def test_a_person_signs_in_in_a_real_browser_and_the_cookie_stays_out_of_scripts(live_server, planner):
    from pathlib import Path

    from tests import browser

    shots = Path(__file__).resolve().parent.parent / ".wangge" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with browser.Chrome(1000, 700) as chrome:
        chrome.send("Page.navigate", url=f"{live_server}/maps/grids?area={AREA}")  # not signed in: to the form
        chrome.wait("document.querySelector('form[action=\"/login\"]') !== null")
        assert chrome.js("location.pathname + location.search") == "/login?next=%2Fmaps%2Fgrids%3Farea%3D110102001"
        chrome.screenshot(shots / "login.png")
        chrome.js(f"document.getElementById('name').value = {planner!r}; "
                  "document.getElementById('secret').value = 'correct horse battery'")
        button = chrome.js("(r => [r.x + r.width / 2, r.y + r.height / 2])("
                           "document.querySelector('button[type=submit]').getBoundingClientRect())")
        chrome.click(*button)
        chrome.wait("location.pathname === '/maps/grids' && document.querySelectorAll('path.leaflet-interactive')"
                    ".length > 10")
        assert "wangge_session" not in chrome.js("document.cookie")  # HttpOnly: no script can read it
        assert chrome.js("location.search") == f"?area={AREA}"


def test_the_command_line_sets_a_password_that_signs_in(database_url, app, engine, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from geo.auth import create_user
    from wangge.cli import app as cli

    with engine.begin() as conn:
        create_user(conn, "signin-cli", "supervisor", AREA)
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    monkeypatch.setenv("WANGGE_LOCAL_DIR", str(tmp_path))
    runner = CliRunner()
    done = runner.invoke(cli, ["users", "password", "signin-cli"], input="a fine password\na fine password\n")
    assert done.exit_code == 0 and "password set for signin-cli" in done.output, done.output
    assert "a fine password" not in done.output  # never echoed
    short = runner.invoke(cli, ["users", "password", "signin-cli"], env={"WANGGE_PASSWORD": "short"})
    assert short.exit_code == 1 and "at least 8" in short.output
    assert sign_in(browser(app), "signin-cli", "a fine password").status_code == 303
    with engine.connect() as conn:
        hashed = conn.execute(text("SELECT password_hash FROM users WHERE name = 'signin-cli'")).scalar_one()
    assert hashed.startswith("$argon2id$")
