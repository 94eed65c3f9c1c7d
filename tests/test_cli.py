"""The wangge command: users and tokens, fixtures idempotence."""

from typer.testing import CliRunner

from wangge.cli import app

runner = CliRunner()


def test_users_create_prints_a_working_scoped_token(client, database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["users", "create", "--role", "planner", "--area", "110102003"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/areas/110102003", headers=headers).status_code == 200
    assert client.get("/areas/110102001", headers=headers).status_code == 404


def test_users_create_rejects_unknown_area_and_role(database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["users", "create", "--role", "planner", "--area", "999999"])
    assert result.exit_code == 1 and "No area with code '999999'" in result.output
    result = runner.invoke(app, ["users", "create", "--role", "mayor", "--area", "110102"])
    assert result.exit_code == 1 and "Unknown role 'mayor'" in result.output


def test_fixtures_load_twice_reuses_what_is_there(demo, database_url, monkeypatch):
    monkeypatch.setenv("WANGGE_DATABASE_URL", database_url)
    result = runner.invoke(app, ["fixtures", "load"])
    assert result.exit_code == 0, result.output
    assert "already loaded" in result.output
