"""``activestream models list|show|promote|rollback|retire``: output, history and exit codes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from activestream.cli import main
from activestream.config import Settings, registry_from
from activestream.errors import EXIT_CONFIG
from activestream.storage.decisions import in_force


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A registry with v1 promoted, v2 promoted, v3 rejected, v4 candidate."""
    for name in ("ACTIVESTREAM_BOOTSTRAP", "ACTIVESTREAM_MODEL_KEY", "ACTIVESTREAM_MODEL_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    reg = registry_from(Settings(home=str(home)))
    for status in ("promoted", "promoted", "rejected", "candidate"):
        reg.register("classifier", {"w": np.ones(2, np.float32)}, spec={"arch": "small_cnn", "classes": ["a", "b"]},
                     parent=None, train_size=10, metrics={"holdout_accuracy": 0.5}, status=status)
    return str(home)


def models(capsys, home: str, *args: str) -> tuple[int, str, str]:
    """Run ``activestream models ARGS`` in-process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as done:
        main(["models", *args, "--home", home])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def serving(home: str) -> int:
    return in_force(registry_from(Settings(home=home)), "classifier").version


def test_list_marks_the_version_in_force_and_show_prints_the_history(capsys, home):
    code, out, _ = models(capsys, home, "list")
    rows = out.splitlines()
    assert code == 0 and len(rows) == 4
    assert rows[1].startswith("* v2\tpromoted") and rows[2].startswith("  v3\trejected")
    code, out, _ = models(capsys, home, "list", "--json")
    assert [json.loads(line)["in_force"] for line in out.splitlines()] == [False, True, False, False]
    code, out, _ = models(capsys, home, "show", "3")
    shown = json.loads(out)
    assert code == 0 and shown["status"] == "rejected" and shown["history"][0]["status"] == "rejected"


def test_promote_rollback_retire_record_who_and_why(capsys, home):
    code, out, err = models(capsys, home, "promote", "4", "--by", "ann", "--reason", "better on the audit set")
    assert code == 0 and "in force: classifier v4" in out and "nothing announced" in err
    assert "a loop started from now on serves it" in err  # not a fault before any loop runs
    assert serving(home) == 4
    code, out, _ = models(capsys, home, "rollback", "--by", "bob", "--reason", "v4 confuses a and b")
    assert code == 0 and "in force: classifier v2" in out and serving(home) == 2
    code, out, _ = models(capsys, home, "retire", "2", "--by", "bob", "--reason", "drifted")
    assert code == 0 and serving(home) == 1
    history = json.loads(models(capsys, home, "show", "4")[1])["history"]
    assert [(e["status"], e["by"]) for e in history] == [("candidate", "activestream"), ("promoted", "ann"),
                                                          ("retired", "bob")]
    assert history[-1]["reason"] == "rolled back to v2: v4 confuses a and b"


@pytest.mark.parametrize("args, words", [
    (("promote", "9", "--reason", "x"), "no version 9 .versions: 1, 2, 3, 4."),
    (("promote", "3", "--reason", "x"), "v3 is rejected .*--force"),
    (("rollback", "--to", "4", "--reason", "x"), "v4 is candidate"),
    (("show", "7"), "no version 7"),
])
def test_operator_mistakes_exit_2_with_the_fix(capsys, home, args, words):
    code, _, err = models(capsys, home, *args)
    assert code == EXIT_CONFIG
    assert err.startswith("activestream: ") and re.search(words, err), err
    assert serving(home) == 2


def test_a_decision_needs_a_reason(capsys, home):
    code, _, err = models(capsys, home, "promote", "4")
    assert code == 2 and "--reason" in err


def test_promote_a_rejected_version_with_force(capsys, home):
    code, out, _ = models(capsys, home, "promote", "3", "--force", "--reason", "the holdout was mislabeled")
    assert code == 0 and serving(home) == 3


@pytest.mark.parametrize("command", [["models", "list"], ["label", "export"], ["run"]])
def test_a_password_in_store_url_is_refused_before_anything_connects(capsys, tmp_path, command):
    with pytest.raises(SystemExit) as done:
        main([*command, "--home", str(tmp_path), "--store-url", "postgresql+psycopg://loop:s3cret@127.0.0.1:9/x"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--store-url" in err and "ACTIVESTREAM_STORE_URL" in err
    assert "s3cret" not in err
