"""``--help`` of every command explains every option and lists its default; the README's install claims."""

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from yolo_transfer.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """{"train": parser, "data check": parser, ...} for every (sub-)command."""
    found = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}".strip())

    walk(build_parser(), "")
    return found


PARSERS = all_parsers()
COMMANDS = sorted(name for name in PARSERS if name)


def test_every_command_is_covered():
    assert {"train", "val", "predict", "compare", "advise", "data check", "data convert", "demo"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_lists_its_default(command):
    parser = PARSERS[command]
    text = " ".join(parser.format_help().split())  # argparse wraps lines: compare word by word
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{command}: {action.dest} has no help string"
        if action.option_strings and action.default is not None and not action.required:
            assert f"(default: {action.default})" in text, (
                f"{command} --help does not show {action.dest}'s default"
            )


def test_help_output_of_train_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "(default: 100)",
        "(default: full)",
        "(default: auto)",
        "(default: runs/train)",
        "(default: exp)",
    ):
        assert expected in text


def test_compare_has_seeds_and_no_seed():
    options = {option for action in PARSERS["compare"]._actions for option in action.option_strings}
    assert "--seeds" in options and "--seed" not in options
    assert "--seed" in {option for action in PARSERS["train"]._actions for option in action.option_strings}


def test_device_defaults_to_auto_in_every_computing_command():
    for command in ("train", "val", "predict", "compare", "advise"):
        assert PARSERS[command].get_default("device") == "auto", command


def test_readme_names_the_official_weights_and_never_points_into_shared():
    readme = (REPO / "README.md").read_text()
    assert "../shared" not in readme
    assert "https://github.com/ultralytics/yolov5/releases/tag/v7.0" in readme
    assert all(f"`yolov5{size}.pt`" in readme for size in "nsmlx")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_cpu_torch_installs_torch_from_the_cpu_index_first(tmp_path):
    dry_run = subprocess.run(
        ["make", "-n", "cpu-torch", f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    torch_step = next(i for i, line in enumerate(dry_run) if "pip install torch torchvision" in line)
    assert "--index-url https://download.pytorch.org/whl/cpu" in dry_run[torch_step]
    assert torch_step < next(i for i, line in enumerate(dry_run) if 'pip install -e ".[dev]"' in line)
