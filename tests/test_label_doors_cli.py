"""The doors' command-line side: token list and revoke, the bind address, secrets never as flags."""

from __future__ import annotations

import base64
import json

import pytest

from activestream.cli import main, parser
from activestream.config import Settings
from activestream.labeling.service import TOKEN_TTL
from conftest import make_settings
from label_helpers import FakeLabelStudio, make_api


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code


@pytest.fixture
def studio():
    fake = FakeLabelStudio(users={7: "cy@example.com"})
    yield fake
    fake.stop()


def test_tokens_are_listed_and_revoked(tmp_path, capsys):
    service, client, clock = make_api(tmp_path, labelers=())
    home = ["--home", str(service.settings.home_path)]
    assert run(["label", "token", "create", "ann", *home]) == 0
    assert run(["label", "token", "create", "bob", *home]) == 0
    tokens = capsys.readouterr().out.split()
    assert run(["label", "token", "list", *home]) == 0
    listed = capsys.readouterr().out
    assert [line.split("\t")[0] for line in listed.splitlines()] == ["ann", "bob"]
    assert not any(token in listed for token in tokens)                 # only names, never tokens

    bob = {"Authorization": f"Bearer {tokens[1]}"}
    assert client.get("/api/config", headers=bob).json()["labeler"] == "bob"
    assert run(["label", "token", "revoke", "bob", *home]) == 0
    clock.advance(TOKEN_TTL)                                           # the running app forgets what it remembered
    assert client.get("/api/config", headers=bob).status_code == 401
    assert client.get("/api/config", headers={"Authorization": f"Bearer {tokens[0]}"}).status_code == 200
    assert run(["label", "token", "list", *home]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "ann"
    assert run(["label", "token", "revoke", "bob", *home]) != 0
    assert "has no token" in capsys.readouterr().err
    service.close()


def test_the_bind_address_is_a_setting_and_a_flag_with_loopback_by_default(tmp_path, monkeypatch):
    from activestream.labeling.cli import settings_from
    from activestream.labeling.server import uvicorn_config

    default = uvicorn_config(make_settings(tmp_path), app=None)
    assert (default.host, default.proxy_headers) == ("127.0.0.1", False)   # no X-Forwarded-For believed
    args = parser().parse_args(["label", "serve", "--host", "0.0.0.0", "--port", "9001"])
    config = uvicorn_config(settings_from(args), app=None)
    assert (config.host, config.port) == ("0.0.0.0", 9001)
    monkeypatch.setenv("ACTIVESTREAM_LABEL_HOST", "::1")
    monkeypatch.setenv("ACTIVESTREAM_LABEL_TRUSTED_PROXIES", "10.0.0.5, 10.0.0.6")
    config = uvicorn_config(Settings(), app=None)
    assert (config.host, config.proxy_headers, config.forwarded_allow_ips) == ("::1", True, ["10.0.0.5", "10.0.0.6"])


@pytest.mark.parametrize("argv", [
    ["label", "import", "x.json", "--label-studio-url", "http://127.0.0.1:1", "--token", "s3cret"],
    ["label", "studio-connect", "--label-studio-url", "http://127.0.0.1:1", "--token", "s3cret", "--project", "3",
     "--backend-url", "http://127.0.0.1:2/ml-backend", "--password", "s3cret"],
])
def test_secrets_on_the_command_line_are_refused_saying_where_they_go(argv, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "ACTIVESTREAM_LABEL_STUDIO_TOKEN" in err and "--token-file" in err


def test_studio_connect_takes_its_secrets_from_a_file_or_the_environment(tmp_path, studio, monkeypatch, capsys):
    studio.answers[("POST", "/api/ml")] = (201, {"id": 4}, {})
    hook = {"id": 9, "url": "http://127.0.0.1:2/ml-backend/webhook"}
    studio.answers[("GET", "/api/webhooks/?project=3")] = (200, [hook], {})
    studio.answers[("PATCH", "/api/webhooks/9/")] = (200, {"id": 9}, {})
    token_file = tmp_path / "ls-token"
    token_file.write_text("ls-api-token\n")
    monkeypatch.setenv("ACTIVESTREAM_LABEL_STUDIO_PASSWORD", "backend-token")
    argv = ["label", "studio-connect", "--label-studio-url", studio.url, "--token-file", str(token_file),
            "--project", "3", "--backend-url", "http://127.0.0.1:2/ml-backend"]
    assert run(argv) == 0
    assert {auth for _, _, auth in studio.seen} == {"Token ls-api-token"}
    ml = studio.bodies[[path for _, path, _ in studio.seen].index("/api/ml")]
    assert (ml["basic_auth_user"], ml["basic_auth_pass"]) == ("studio", "backend-token")
    basic = "Basic " + base64.b64encode(b"studio:backend-token").decode()
    assert studio.bodies[-1] == {"headers": {"Authorization": basic}}

    monkeypatch.delenv("ACTIVESTREAM_LABEL_STUDIO_PASSWORD")
    assert run(argv) != 0
    assert "ACTIVESTREAM_LABEL_STUDIO_PASSWORD" in capsys.readouterr().err   # missing: says where it goes


def test_import_resolves_users_with_a_token_from_the_environment(tmp_path, studio, monkeypatch, capsys):
    service, _, _ = make_api(tmp_path, labelers=())
    item = service.pending(10)[0].id
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": 1, "data": {"activestream_id": item}, "annotations": [
        {"id": 2, "completed_by": 7, "result": [{"type": "choices", "value": {"choices": ["5"]}}]}]}]))
    argv = ["label", "import", str(export), "--home", str(service.settings.home_path), "--label-studio-url", studio.url]
    assert run(argv) != 0
    assert "ACTIVESTREAM_LABEL_STUDIO_TOKEN" in capsys.readouterr().err   # a URL without a token: says where it goes
    monkeypatch.setenv("ACTIVESTREAM_LABEL_STUDIO_TOKEN", "ls-api-token")
    assert run(argv) == 0
    assert ("GET", "/api/users/7/", "Token ls-api-token") in studio.seen
    stored = [(lab.labeler, lab.label) for lab in service.store.labels_for(item)]
    assert stored == [("labelstudio.cy_at_example.com", 5)]
    service.close()



def test_a_token_made_where_no_store_is_yet_says_so(tmp_path, capsys):
    home = ["--home", str(tmp_path / "not-the-loops-home")]
    assert run(["label", "token", "create", "ann", *home]) == 0
    made = capsys.readouterr()
    assert len(made.out.split()) == 1 and "holds no store yet" in made.err and "--home" in made.err
    assert run(["label", "token", "create", "bob", *home]) == 0
    assert "holds no store" not in capsys.readouterr().err
