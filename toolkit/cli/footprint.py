"""`toolkit footprint` command-line wiring."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.cli.common import byte_size, exports_arg, quiet_arg


def footprint_args(p: argparse.ArgumentParser) -> None:
    quiet_arg(p)
    exports_arg(p)
    p.add_argument("--target-flash", type=byte_size, default=None, metavar="SIZE",
                   help="add your own device: flash for the model, e.g. 512K or 2M (K = 1024)")
    p.add_argument("--target-ram", type=byte_size, default=None, metavar="SIZE",
                   help="and RAM for the tensor arena, e.g. 128K")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="where to write the JSON (default: DIR/footprint.json; .md beside it)")


def footprint_run(args: argparse.Namespace) -> int:
    from toolkit import tflm as micro
    from toolkit.footprint import footprint, markdown, write_outputs

    devices = micro.DEVICE_CLASSES
    if args.target_flash is not None or args.target_ram is not None:
        flash = args.target_flash if args.target_flash is not None else 1 << 62
        ram = args.target_ram if args.target_ram is not None else 1 << 62
        devices = (*devices, micro.DeviceClass("your target", "--target-flash/--target-ram", flash, ram))
    doc = footprint(args.exports, devices)
    paths = write_outputs(doc, args.exports, args.json)
    print(markdown(doc))
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return 0


COMMANDS = {
    "footprint": (
        footprint_args, footprint_run,
        "microcontroller footprint of the int8 variants (needs [micro])",
        "For each int8 variant: model bytes (flash), the tensor arena TFLM's recording allocator "
        "measures (RAM), the operators used, and whether it fits a few device classes (or your "
        "own with --target-flash/--target-ram). Needs the tflite-micro package "
        "(pip install -e '.[micro]'); exits 6 without it.",
    ),
}
