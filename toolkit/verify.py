"""`toolkit verify`: the export directory is exactly what its manifest says, and loads."""

from __future__ import annotations

from pathlib import Path

from toolkit import artifacts
from toolkit.runners import runner_for


def verify(exports: Path) -> list[str]:
    manifest = artifacts.read_manifest(exports)
    lines = []
    for entry in manifest["artifacts"]:
        path = artifacts.verify_entry(exports, entry)
        runner_for(entry["format"], path)
        lines.append(f"ok  {entry['variant']:<15} {entry['bytes']:>10} bytes  sha256 {entry['sha256'][:16]}")
    lines.append(f"{len(manifest['artifacts'])} artifact(s) in {Path(exports) / artifacts.MANIFEST} verified")
    return lines
