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
    assert main(["train", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path)]) == 3
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
    rc = main(["train", "--data-dir", str(data_dir), "--out", str(tmp_path), "--epochs", "1",
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
