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
    p.add_argument("--npu", nargs="*", default=None, metavar="CONFIG",
                   help="also compile each full-integer TFLite variant for Arm Ethos-U NPU configurations with Arm's "
                   "Vela and report, per configuration, the operators on the NPU and on the CPU (with Vela's "
                   "reason), SRAM, flash and DRAM used, and Vela's estimated time per inference (estimates, not "
                   "measurements). Names: ethos-u55-128, ethos-u55-256, ethos-u65-256, ethos-u65-512, "
                   "ethos-u85-256; --npu alone: ethos-u55-128, ethos-u65-256 and ethos-u85-256. The compiled "
                   "files go to DIR/npu/CONFIG/. Needs ethos-u-vela (pip install -e '.[npu]'); exits 6 without it")
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
    npu: tuple[str, ...] = ()
    if args.npu is not None:
        from toolkit.targets import check_available, defaults

        npu = tuple(args.npu) or tuple(defaults())
        check_available(list(npu))  # an unknown name or a missing compiler: before any work
    from toolkit.progress import say

    doc = footprint(args.exports, devices, npu, log=lambda line: say(line, not args.quiet))
    paths = write_outputs(doc, args.exports, args.json)
    print(markdown(doc))
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return 0


COMMANDS = {
    "footprint": (
        footprint_args, footprint_run,
        "microcontroller footprint of the int8 variants (needs [micro]); Ethos-U NPUs with --npu (needs [npu])",
        "For each int8 variant: model bytes (flash), the tensor arena TFLM's recording allocator "
        "measures (RAM), the operators used, and whether it fits a few device classes (or your "
        "own with --target-flash/--target-ram). With --npu, also what Arm's Vela compiler places on an "
        "Ethos-U NPU and the CPU, the memory it uses and its estimated time per inference. Needs the "
        "tflite-micro package (pip install -e '.[micro]'); exits 6 without it (and without ethos-u-vela "
        "for --npu).",
    ),
}
