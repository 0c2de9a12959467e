"""Errors as a user meets them on the command line: checked before anything starts, one
line (at most three) naming the flag or setting at fault, no traceback unless --debug, and
a non-zero exit. Each command runs as a user types it, in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from activestream.errors import EXIT_CONFIG, ConfigError
from activestream.simulation.datasets import check_dataset

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432"


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def activestream(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``activestream ARGV`` in ``tmp_path`` with no ACTIVESTREAM_* settings but ``env``; the
    timeout only catches a hang, it measures nothing."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVESTREAM_")}
    clean.update(PYTHONPATH=str(ROOT), **(env or {}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "activestream", *argv], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    done.seconds = time.monotonic() - started  # shown when an assertion fails, never asserted
    return done


def assert_one_line(done: subprocess.CompletedProcess, *names: str, code: int = EXIT_CONFIG) -> str:
    err = done.stderr.strip()
    shown = f"exit {done.returncode} after {done.seconds:.1f} s\nstdout: {done.stdout}\nstderr: {err}"
    assert done.returncode == code, shown
    assert len(err.splitlines()) <= 3 and "Traceback" not in err, shown
    assert err.startswith("activestream: "), shown
    for name in names:
        assert name in err, shown
    return err


def assert_nothing_started(home: Path) -> None:
    """No broker, worker or store: `run` makes the logs folder first thing when it starts them."""
    assert not (home / "logs").exists() and not (home / "store.db").exists()


def run(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return activestream(tmp_path, "run", "--home", str(tmp_path / "home"), "--images", "300", *flags, env=env)


@pytest.mark.postgres
@pytest.mark.parametrize("url, says", [
    (f"{PG}/nosuchdb", 'database "nosuchdb" does not exist'),
    (f"postgresql://postgres@127.0.0.1:{closed_port()}/test", "Connection refused"),
    ("postgres://postgres@127.0.0.1:5432/test", "postgresql://"),
], ids=["missing database", "closed port", "postgres typo"])
def test_a_store_that_cannot_be_opened_fails_before_anything_starts(tmp_path, url, says):
    done = run(tmp_path, "--dataset", "digits", "--store-url", url)
    assert_one_line(done, "--store-url", "ACTIVESTREAM_STORE_URL", says)
    assert_nothing_started(tmp_path / "home")


def test_the_same_store_check_guards_label_and_models_commands(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    for argv in (("label", "token", "create", "ann"), ("label", "serve", "--bootstrap", "127.0.0.1:9")):
        assert_one_line(activestream(tmp_path, *argv, "--store-url", url), "--store-url", "Connection refused")
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    done = activestream(tmp_path, "seed", str(folder), "--arch", "small_cnn", "--size", "8",
                        "--store-url", "postgres://db/x", "--home", str(tmp_path / "home"))
    assert_one_line(done, "--store-url", "postgresql://")


def test_a_missing_data_folder_and_an_unknown_dataset_fail_before_anything_starts(tmp_path):
    missing = tmp_path / "no-such-folder"
    assert_one_line(run(tmp_path, "--data-dir", str(missing)), "--data-dir", str(missing))
    assert_one_line(run(tmp_path, "--dataset", "mnist", "--data-dir", str(tmp_path)), "mnist", "--data-dir")
    assert_one_line(run(tmp_path, "--dataset", "foo"), "--dataset", "'foo'", "digits")
    assert_nothing_started(tmp_path / "home")
    assert_one_line(activestream(tmp_path, "simulate", "--dataset", "foo", "--out", str(tmp_path / "out")),
                    "--dataset", "'foo'")
    assert not (tmp_path / "out").exists()


def test_the_default_dataset_never_swaps_a_named_folder_for_digits(tmp_path):
    """`auto` with no data folder at all is the bundled digits (the demo works offline); a
    folder that is named but holds no Fashion-MNIST is an error, whether the flag or the
    variable names it."""
    assert check_dataset("auto", None) == "digits"
    assert check_dataset("digits", str(tmp_path / "nowhere")) == "digits"  # digits read no folder
    with pytest.raises(ConfigError, match="--dataset auto reads Fashion-MNIST .* is missing"):
        check_dataset("auto", str(tmp_path))
    done = run(tmp_path, env={"ACTIVESTREAM_DATA_DIR": str(tmp_path)})
    assert_one_line(done, str(tmp_path / "fashion-mnist"), "--dataset", "ACTIVESTREAM_DATA_DIR")
    assert_nothing_started(tmp_path / "home")


@pytest.mark.kafka
def test_an_unreachable_broker_fails_after_the_wait_it_was_given(tmp_path):
    broker = f"127.0.0.1:{closed_port()}"
    done = run(tmp_path, "--dataset", "digits", "--bootstrap", broker, "--broker-wait", "1")
    assert_one_line(done, "--bootstrap", broker, "within 1 s", "--broker-wait")
    assert_nothing_started(tmp_path / "home")
    done = activestream(tmp_path, "label", "serve", "--home", str(tmp_path / "home"), "--bootstrap", broker,
                        "--broker-wait", "1")
    assert_one_line(done, "--bootstrap", broker)
    done = activestream(tmp_path, "models", "rollback", "--reason", "r", "--home", str(tmp_path / "home"),
                        "--bootstrap", broker, "--broker-wait", "1")
    assert_one_line(done, "--bootstrap", broker)


@pytest.mark.parametrize("flags, env, names", [
    (("--budget", "2"), {}, ("--budget (ACTIVESTREAM_BUDGET)", "less than or equal to 1")),
    (("--strategy", "bald"), {}, ("--strategy (ACTIVESTREAM_STRATEGY)", "bald")),
    (("--broker-wait", "0"), {}, ("--broker-wait (ACTIVESTREAM_BROKER_WAIT)",)),
    ((), {"ACTIVESTREAM_RATE": "fast"}, ("ACTIVESTREAM_RATE", "'fast'")),
    ((), {"ACTIVESTREAM_BUDGET": "0", "ACTIVESTREAM_HOLDOUT": "1"}, ("ACTIVESTREAM_BUDGET", "ACTIVESTREAM_HOLDOUT")),
], ids=["flag out of range", "strategy the worker cannot run", "zero wait", "variable of the wrong type",
        "two at once"])
def test_an_invalid_setting_is_one_line_naming_it(tmp_path, flags, env, names):
    done = run(tmp_path, *flags, env=env)
    assert_one_line(done, "invalid setting", *names)
    assert_nothing_started(tmp_path / "home")


def test_a_flag_of_the_wrong_type_is_one_line_not_the_usage_block(tmp_path):
    done = run(tmp_path, "--budget", "a lot")
    err = done.stderr.strip()
    assert done.returncode == EXIT_CONFIG and len(err.splitlines()) == 1, err
    assert "--budget" in err and "'a lot'" in err and "activestream run --help" in err


def test_debug_shows_the_traceback(tmp_path):
    done = run(tmp_path, "--dataset", "foo", "--debug")
    assert done.returncode == EXIT_CONFIG
    assert "Traceback" in done.stderr and done.stderr.strip().splitlines()[-1].startswith("activestream: ")


def test_gold_from_a_labeler_with_no_labels_is_an_error(tmp_path):
    home = str(tmp_path / "home")
    done = activestream(tmp_path, "label", "gold", "--from-labeler", "nobody", "--home", home)
    assert "added" not in done.stdout
    assert_one_line(done, "--from-labeler", "'nobody'", "seed")


SIMULATE = ("simulate", "--dataset", "digits", "--images", "300", "--device", "cpu")
COMPARE = ("compare", "--dataset", "digits", "--images", "300", "--device", "cpu")


INVALID_SIMULATIONS = [
    ((*SIMULATE, "--budget", "-0.1"), ("--budget", "greater than 0", "-0.1")),
    ((*SIMULATE, "--budget", "1.5"), ("--budget", "at most 1")),
    ((*SIMULATE, "--window", "0"), ("--window", "at least 1")),
    ((*SIMULATE, "--images", "0"), ("--images",)),
    ((*SIMULATE, "--audit-share", "2"), ("--audit-share",)),
    ((*SIMULATE, "--holdout", "1"), ("--holdout", "less than 1")),
    ((*SIMULATE, "--label-lag", "-5"), ("--label-lag",)),
    ((*SIMULATE, "--learning-rate", "0"), ("--learning-rate",)),
    ((*SIMULATE, "--drift-factor", "0.5"), ("--drift-factor",)),
    ((*SIMULATE, "--strategy", "smallest"), ("--strategy", "'smallest'")),
    ((*SIMULATE, "--strategy", "margin/colour:red"), ("--strategy", "colour:red")),
    ((*SIMULATE, "--labeler", "nobody"), ("--labeler", "'nobody'")),
    ((*SIMULATE, "--labeler", "noisy:2"), ("--labeler",)),
    ((*SIMULATE, "--pseudo", "oracle"), ("--pseudo", "human labels")),
    ((*SIMULATE, "--scenario", "spin"), ("--scenario", "'spin'")),
    ((*SIMULATE, "--drift-detectors", "adwn"), ("--drift-detectors", "adwn")),
    ((*SIMULATE, "--arch", "lenett"), ("--arch", "'lenett'")),
    ((*SIMULATE, "--device", "tpu"), ("--device", "'tpu'")),
    ((*SIMULATE, "--threads", "-1"), ("--threads",)),
    ((*COMPARE, "--seeds", "0"), ("--seeds",)),
    ((*COMPARE, "--jobs", "0"), ("--jobs",)),
    ((*COMPARE, "--target", "2"), ("--target",)),
    ((*COMPARE, "--arms", "margin,bogus"), ("--arms", "'bogus'")),
    ((*COMPARE, "--arms", "margin@nobody"), ("--arms", "'nobody'")),
    ((*COMPARE, "--baseline", "nobody"), ("--baseline", "'nobody'")),
]


@pytest.mark.parametrize("argv, names", INVALID_SIMULATIONS,
                         ids=[f"{argv[0]} {' '.join(argv[len(SIMULATE):])}" for argv, _ in INVALID_SIMULATIONS])
def test_an_invalid_simulation_setting_is_one_line_naming_its_flag(tmp_path, argv, names):
    out = tmp_path / "out"
    done = activestream(tmp_path, *argv, "--no-progress", "--out", str(out))
    assert_one_line(done, "invalid setting", *names)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_simulation_flag_of_the_wrong_kind_is_one_line(tmp_path):
    done = activestream(tmp_path, *SIMULATE, "--cosine", "maybe")
    err = done.stderr.strip()
    assert done.returncode == EXIT_CONFIG and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--cosine" in err and "'maybe'" in err and "activestream simulate --help" in err


def test_an_unknown_run_strategy_offers_what_run_takes(tmp_path):
    from activestream.selectors import ONE_PASS_SELECTORS

    err = assert_one_line(run(tmp_path, "--strategy", "smallest"), "--strategy (ACTIVESTREAM_STRATEGY)",
                          "'smallest'", ", ".join(ONE_PASS_SELECTORS))
    assert "bald" not in err
    assert_nothing_started(tmp_path / "home")
