"""`toolkit train` command-line wiring."""

from __future__ import annotations

import argparse

from toolkit.cli.common import (
    DeprecatedAlias,
    arch_args,
    check_preprocess_flags,
    dataset_args,
    export_dir,
    exports_arg,
    json_arg,
    preprocess_args,
    quiet_arg,
    train_config,
    write_json_result,
)
from toolkit.datasets import DEFAULT as DEFAULT_DATASET


def train_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    dataset_args(p, DEFAULT_DATASET)
    exports_arg(p, help="where to write model.keras and train.json, the directory the other commands take as "
                "--exports (default: %(default)s)")
    p.add_argument("--out", type=export_dir, dest="exports", action=DeprecatedAlias, metavar="DIR",
                   help=argparse.SUPPRESS)
    arch_args(p)
    json_arg(p, "the training record (DIR/train.json)")
    preprocess_args(p, resize=False)


def train_run(args: argparse.Namespace) -> int:
    from toolkit.train import train

    check_preprocess_flags(args)
    cfg = train_config(args, args.exports.root)
    record = train(cfg)
    write_json_result(args, {"record": record})
    print(
        f"test accuracy {record['test_accuracy'] * 100:.2f}%  "
        f"validation accuracy {record['validation_accuracy'] * 100:.2f}%  "
        f"({record['train_seconds']:.1f} s training)"
    )
    print(f"wrote {args.exports.model_path} and {args.exports.train_path}")
    return 0


COMMANDS = {
    "train": (
        train_args, train_run,
        "train the seed CNN (or --arch mlp|mlp-deep|softmax) on MNIST or --dataset, reproducibly",
        "Train the seed CNN (conv 5x5x32 -> pool -> conv 5x5x64 -> pool -> dense 1024 -> dropout "
        "-> dense K), or one of the tutorials' smaller models with --arch, on the training split "
        "(MNIST's 55,000 images, or --dataset DIR|FILE.npz: the model takes the images' own size "
        "and the dataset's classes), report validation and test accuracy, "
        "and write DIR/model.keras plus DIR/train.json (hyper-parameters, per-epoch metrics, test "
        "accuracy, wall time, versions, git commit, weights sha256).",
    ),
}
