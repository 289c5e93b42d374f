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
        assert "--quiet" in flags and "--exports" in flags and "--json" in flags, name
        import re

        named = set(re.findall(r"(--[a-z][a-z-]*)", child.epilog or ""))
        assert named <= set(flags), f"{name}'s epilog names {named - set(flags)}, which it does not take"
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
    # run takes export's options, with the same names and defaults, and --force
    export_flags = {o: a for a in sub.choices["export"]._actions for o in a.option_strings}
    run_flags = {o: a for a in sub.choices["run"]._actions for o in a.option_strings}
    for option in ("--format", "--quantize", "--calibration-samples", "--calibration-method", "--opset", "--force",
                   "--max-accuracy-drop", "--min-agreement", "--max-fallback-layers", "--recipe"):
        assert option in run_flags and run_flags[option].default == export_flags[option].default, option
    # one name per concept: the int8 accuracy budget is --max-accuracy-drop in export, run and parity; the
    # images of one call and the seed of the training are named apart from the training's batch and seed
    assert "--max-accuracy-drop" in {o for a in sub.choices["parity"]._actions for o in a.option_strings}
    assert parser.parse_args(["parity", "--images-per-call", "7"]).images_per_call == 7
    assert parser.parse_args(["bench", "--input-seed", "3"]).input_seed == 3


def test_the_pytest_plugin_offers_every_gate_option_with_the_same_parsing(pytester):
    """`pytest --toolkit-NAME` for every check option of `toolkit gate`, with the same types and defaults."""
    import argparse

    from toolkit.cli import build_parser
    from toolkit.cli.gate import PLUGIN_EXCLUDED

    gate = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["gate"]
    config = pytester.parseconfig("--toolkit-max-arena", "48K", "--toolkit-latency-batch-sizes", "1,8",
                                  "--toolkit-max-bytes", "tflite-int8=3.4M")
    assert config.getoption("toolkit_max_arena") == 48 * 1024
    assert config.getoption("toolkit_latency_batch_sizes") == (1, 8)
    assert config.getoption("toolkit_max_bytes") == [("tflite-int8", int(3.4 * 1024 * 1024))]
    defaults = pytester.parseconfig()
    mirrored = [a for a in gate._actions if a.option_strings and a.option_strings[0] not in PLUGIN_EXCLUDED]
    assert {a.dest for a in mirrored} >= {"accuracy_margin", "ship", "latency_batch_sizes", "latency_threads",
                                          "latency_margin", "latency_rounds", "max_bytes", "max_arena", "strict"}
    for action in mirrored:
        assert defaults.getoption(f"toolkit_{action.dest}") == action.default, action.dest


@pytest.mark.parametrize("argv", [
    ["export", "--model", "missing.keras", "--scale", "standard"],
    ["export", "--model", "missing.keras", "--mean", "0.5"],
    ["export", "--model", "missing.keras", "--recipe", "r.json", "--max-accuracy-drop", "1"],
    ["export", "--model", "missing.keras", "--opset", "13"],
    ["export", "--model", "missing.keras", "--format", "openvino", "--max-accuracy-drop", "1"],
    ["run", "--model", "missing.keras", "--runtimes", "nosuch"],
    ["run", "--model", "missing.keras", "--min-agreement", "101"],
    ["parity", "--runtimes", "nosuch"],
    ["parity", "--reference-runtime", "nosuch"],
    ["parity", "--max-accuracy-drop", "-1"],
    ["bench", "--runtimes", "nosuch"],
    ["train", "--dataset", "/nonexistent", "--scale", "standard"],
])
def test_usage_errors_are_found_before_any_file_is_read(argv, tmp_path, capsys):
    """A bad flag exits 2 even where the files are missing too (it does not hide behind exit 3)."""
    from toolkit.cli import main

    assert main([*argv, "--exports", str(tmp_path / "none")]) == 2, capsys.readouterr().err


def test_run_refuses_to_overwrite_without_force_and_a_missing_model_is_exit_3(tmp_path, capsys):
    from toolkit.cli import main

    (tmp_path / "manifest.json").write_text("{}")
    assert main(["run", "--exports", str(tmp_path), "--skip-train"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["run", "--exports", str(tmp_path / "new"), "--model", str(tmp_path / "missing.keras")]) == 3
    assert "missing.keras not found" in capsys.readouterr().err
