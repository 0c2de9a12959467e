"""Help as a user reads it: plain text at the top, every flag's default shown and taken from
the code, one list of strategies for `run`, one meaning per flag name, and the simulator's
defaults that differ from `run`'s each with its reason."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from activestream.cli import RUN_FLAGS, parser, setting_of
from activestream.config import Settings
from activestream.selectors import ONE_PASS_SELECTORS, SELECTORS
from activestream.simulation.cli import RENAMED, _FLAGS, config_from
from activestream.simulation.config import (
    DEFAULTS, WHY_NOT_RUNS, defaults_table, differs_from_run, field_of, flag_of, run_default,
)

ROOT = Path(__file__).resolve().parents[1]
SHOWN = {True: "true", False: "false", None: "none"}


def command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def helps(p: argparse.ArgumentParser) -> dict[str, str]:
    """Each shown flag's help as printed (argparse's %% unescaped)."""
    return {a.option_strings[-1]: a.help.replace("%%", "%") for a in p._actions
            if a.option_strings and a.help != argparse.SUPPRESS and "--help" not in a.option_strings}


def shown(value) -> str:
    return SHOWN.get(value, str(value)) if isinstance(value, (bool, type(None))) else str(value)


def test_the_top_level_help_is_plain_text():
    text = parser().format_help()
    assert "`" not in text and not re.search(r"\[/?(bold|italic|cyan|red|green|link)", text), text
    assert "activestream run" in text and "--help" in text
    for name in ("run", "simulate", "compare"):
        assert "`" not in command(name).format_help(), name


@pytest.mark.parametrize("name", ["run", "simulate", "compare"])
def test_every_flag_shows_its_default(name):
    for flag, text in helps(command(name)).items():
        assert "default:" in text, f"{name} {flag}: {text}"


def test_run_shows_the_defaults_of_its_settings():
    shown_help = helps(command("run"))
    for flag, (_, text) in RUN_FLAGS.items():
        if text and "default:" in text:  # says in words what an unset value does
            continue
        default = Settings.model_fields[setting_of(flag)].default
        assert f"(default: {shown(default)})" in shown_help[flag], flag


def listed(text: str) -> set[str]:
    """Strategy names in a help or error text."""
    return set(re.findall(r"\b[a-z]+(?:_[a-z]+)*\b", text)) & set(SELECTORS)


def test_run_strategies_agree_between_help_accepted_values_and_error():
    in_help = listed(helps(command("run"))["--strategy"])
    accepted = set()
    for name in SELECTORS:
        try:
            Settings(strategy=name)
            accepted.add(name)
        except ValidationError:
            pass
    assert in_help == accepted == set(ONE_PASS_SELECTORS)
    for wrong in ("bald", "smallest_margin"):
        with pytest.raises(ValidationError) as caught:
            Settings(strategy=wrong)
        offered = str(caught.value).split("use one of:")[1].split("[")[0]
        assert listed(offered) == accepted, str(caught.value)


def test_simulate_and_compare_show_the_simulator_defaults_and_why_run_differs():
    for name in ("simulate", "compare"):
        shown_help = helps(command(name))
        for flag in _FLAGS:
            field = field_of(flag)
            if field == "data_dir":
                continue  # a folder found at run time, described in words
            assert f"(default: {shown(DEFAULTS[field])}" in shown_help[flag], (name, flag)
            if differs_from_run(field):
                assert f"run's is {run_default(field)}: {WHY_NOT_RUNS[field]}" in shown_help[flag], (name, flag)


def test_every_default_that_differs_from_run_has_a_reason_and_no_reason_is_stale():
    assert {f for f in DEFAULTS if differs_from_run(f)} == set(WHY_NOT_RUNS)
    assert {"seed_size", "budget", "arch", "learning_rate"} <= set(WHY_NOT_RUNS)


def test_the_docs_show_the_table_the_code_makes():
    assert defaults_table() in (ROOT / "docs" / "simulation.md").read_text()


def test_label_delay_is_seconds_per_batch_in_run():
    text = helps(command("run"))["--label-delay"]
    assert "seconds" in text and "batch" in text and "per request" not in text.replace("not per request", "")
    assert text.startswith(Settings.model_fields["label_delay"].description)


def test_the_simulated_labeler_waits_once_per_batch(monkeypatch):
    """What run's --label-delay does: one wait for a batch of requests, whatever its size."""
    from activestream.streams import demo
    from activestream.streams.messages import LabelRequestV1

    waits = []

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(demo.asyncio, "sleep", sleep)
    requests = [LabelRequestV1(id=f"img-{i}", uri=f"blob:img-{i}", reason="uncertain", score=0.5, probability=0.5,
                               model="classifier", version=1, top=[(0, 0.5)], priority=0.5, ts=0.0).encode()
                for i in range(5)]
    records = [ConsumerRecord("labeling.requests", 0, i, 0, 0, b"k", v, None, 0, len(v), [])
               for i, v in enumerate(requests)]
    labeler = demo.SimulatedLabeler({f"img-{i}": i for i in range(5)}, "labels", "deadletter", delay=0.7)
    outputs = asyncio.run(labeler.handle(records))
    assert len(outputs) == 5 and waits == [0.7]


def test_simulate_names_its_lag_in_images_and_keeps_the_old_name_hidden():
    for name in ("simulate", "compare"):
        text = helps(command(name))
        assert "--label-delay" not in text and "images" in text["--label-lag"]
        assert "--label-delay LABEL_DELAY" not in command(name).format_help()  # named only as run's
    assert flag_of("label_delay") == "--label-lag" and RENAMED == {"--label-delay": "--label-lag"}


def test_the_old_name_still_works_with_a_warning(tmp_path, capsys):
    base = ["simulate", "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path)]
    config = config_from(parser().parse_args([*base, "--label-delay", "300"]))
    assert config.label_delay == 300
    assert "--label-lag" in capsys.readouterr().err
    assert config_from(parser().parse_args([*base, "--label-lag", "40"])).label_delay == 40
    from activestream.errors import ConfigError

    with pytest.raises(ConfigError, match="--label-lag only"):
        config_from(parser().parse_args([*base, "--label-delay", "3", "--label-lag", "4"]))
