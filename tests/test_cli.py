import json
import subprocess
import sys

import pytest

from toolkit.cli import main

COMMANDS = ["train", "export", "verify", "parity", "bench", "run"]


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from toolkit.cli import main\n"
        "for argv in (['--help'], " + ", ".join(f"['{c}', '--help']" for c in COMMANDS) + "):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf2onnx', 'ai_edge_litert') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help_explains_defaults(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "default" in out


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "0"],
    ["train", "--batch-size", "x"],
    ["train", "--learning-rate", "-1"],
    ["export", "--format", "coreml"],
    ["export", "--quantize", "int4"],
    ["nonsense"],
])
def test_bad_flags_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_missing_data_dir_exit_3(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "absent"), "--exports", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "does not exist" in err and "TOOLKIT_DATA_DIR" in err
    assert "Traceback" not in err


def test_export_without_model_exit_3(tmp_path, capsys):
    assert main(["export", "--exports", str(tmp_path)]) == 3
    assert "model file" in capsys.readouterr().err


def test_export_quantize_mode_without_variant_for_format(tmp_path, capsys):
    assert main(["export", "--format", "onnx", "--quantize", "fp16", "--exports", str(tmp_path)]) == 2
    assert "no 'fp16' variant" in capsys.readouterr().err


def test_parity_without_export_exit_3(tmp_path, capsys):
    assert main(["parity", "--exports", str(tmp_path)]) == 3
    assert "toolkit export" in capsys.readouterr().err


def test_train_cli_end_to_end(tmp_path, data_dir, capsys):
    rc = main(["train", "--data-dir", str(data_dir), "--exports", str(tmp_path), "--epochs", "1",
               "--train-limit", "500", "--batch-size", "50"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["hyperparameters"]["batch_size"] == 50
    assert f"{record['test_accuracy'] * 100:.2f}%" in out


def test_docs_cli_md_is_current():
    """docs/cli.md is every command's --help as the parsers print it: regenerate with `python docs/cli_md.py`."""
    from pathlib import Path

    from toolkit.cli import reference_markdown

    path = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert path.read_text() == reference_markdown(), "docs/cli.md is out of date: run `python docs/cli_md.py`"


def test_train_out_is_a_deprecated_alias_of_exports(capsys):
    from toolkit.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "runs/a"])
    assert str(args.exports) == "runs/a"
    assert "--out is deprecated, use --exports" in capsys.readouterr().err


def test_every_parser_follows_the_conventions():
    """One vocabulary across commands: every command takes --exports (the directory) and --quiet; no visible
    --out; every list of integers takes spaces and commas; every byte size takes K/M suffixes."""
    import argparse

    from toolkit.cli import build_parser
    from toolkit.cli.common import IntList, byte_size

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, child in sub.choices.items():
        flags = {o: a for a in child._actions for o in a.option_strings}
        assert "--quiet" in flags and "--exports" in flags, name
        visible = {o for o, a in flags.items() if a.help != argparse.SUPPRESS}
        assert "--out" not in visible, name
        for option, action in flags.items():
            if action.metavar in ("N,N,...",) or option.endswith(("-batch-sizes", "-threads", "--threads")):
                assert isinstance(action, IntList), (name, option)
            if action.metavar == "SIZE":
                assert action.type is byte_size, (name, option)
    args = parser.parse_args(["bench", "--batch-sizes", "1", "8,32", "--threads", "1,2"])
    assert args.batch_sizes == (1, 8, 32) and args.threads == (1, 2)
    assert parser.parse_args(["gate", "--baseline", "b", "--max-arena", "48K"]).max_arena == 48 * 1024
    assert parser.parse_args(["export", "--format", "tflite", "onnx"]).format == ["tflite", "onnx"]
