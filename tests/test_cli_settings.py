"""The training command lines share core.cli's recipe flags and its one-line error ending."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from core import train as train_cli
from core import train_fracture
from core.cli import add_settings, run_or_report
from core.model.fracture_training import FRACTURE_BASE_MODEL, FractureConfig
from core.model.training import TrainConfig


def test_settings_flags_take_the_dataclass_defaults_and_types() -> None:
    parser = argparse.ArgumentParser()
    add_settings(parser, TrainConfig, ("batch_size", "split_seed"), int)
    add_settings(parser, TrainConfig, ("max_lr",), float)
    defaults = parser.parse_args([])
    assert (defaults.batch_size, defaults.split_seed, defaults.max_lr) == (
        TrainConfig.batch_size,
        TrainConfig.split_seed,
        TrainConfig.max_lr,
    )
    given = parser.parse_args(["--batch-size", "7", "--max-lr", "0.5"])
    assert given.batch_size == 7 and given.max_lr == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--split-seed", "one"])


def test_a_failure_is_one_error_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def fails() -> None:
        raise ValueError("the settings are wrong")

    assert run_or_report(fails) == 2
    assert capsys.readouterr().err == "error: the settings are wrong\n"
    assert run_or_report(lambda: None) == 0


def test_train_refuses_an_unknown_architecture_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--mura-root", str(tmp_path), "--arch", "nope", "--out", str(tmp_path / "out")]
    assert train_cli.main(arguments) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: Unknown architecture 'nope'")


def test_train_fracture_builds_on_the_mura_ensemble_and_reports_bad_data_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The branches sit on the shipped MURA ensemble whichever model is the default (the fracture model may be).
    assert FractureConfig.base_model == FRACTURE_BASE_MODEL == "mura_efficientnet_lite0"
    arguments = ["--fracatlas", str(tmp_path / "absent"), "--fold", "0", "--out", str(tmp_path / "out")]
    assert train_fracture.main([*arguments, "--split", str(tmp_path / "absent.csv"), "--epochs", "1"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ")
