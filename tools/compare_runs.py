"""Compare two tools/seed_run.sh runs: artifacts byte for byte, JSON with run-specific values removed.

usage: python tools/compare_runs.py BEFORE_DIR AFTER_DIR   (exits 1 on a difference)

Run-specific values: generation ids, paths, provenance, timings and latency figures. The added
``schema_version`` key is ignored (files written before versions had none). bench.json is compared by its
keys, its rows (variant, runtime, batch size, fields) and its config but the exports path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from toolkit import schema

# the keys whose values differ between two runs of the same code (measured: these and nothing else)
VOLATILE = {"provenance", "generation", "export_generation", "path", "seconds", "conversion_seconds", "search_seconds",
            "p50_ms_batch1", "p50_ci95_ms_batch1"}


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if k != schema.VERSION_KEY and k not in VOLATILE}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def same_artifacts(a: Path, b: Path) -> bool:
    digests = [{e["variant"]: e["sha256"] for e in load(d / schema.MANIFEST)["artifacts"]} for d in (a, b)]
    print(f"{a.name}: {len(digests[0])} artifacts, byte-identical: {digests[0] == digests[1]}")
    return digests[0] == digests[1]


def same_json(a: Path, b: Path) -> bool:
    ok = True
    for name in (schema.MANIFEST, schema.PARITY, schema.FOOTPRINT, schema.RECIPE):
        if not (a / name).exists():
            continue
        ja, jb = clean(load(a / name)), clean(load(b / name))
        print(f"{a.name}/{name}: the same once run-specific values are removed: {ja == jb}")
        for key in sorted(set(ja) | set(jb)):
            if ja.get(key) != jb.get(key):
                print(f"   differs: {key}: {str(ja.get(key))[:300]} | {str(jb.get(key))[:300]}")
        ok &= ja == jb
    return ok


def same_bench(a: Path, b: Path) -> bool:
    if not (a / schema.BENCH).exists():
        return True
    ka, kb = load(a / schema.BENCH), load(b / schema.BENCH)

    def rows(doc: dict) -> list:
        return [(r["variant"], r["runtime"], r["batch_size"], sorted(r)) for r in doc["results"]]

    keys = sorted(set(ka) - {schema.VERSION_KEY}) == sorted(set(kb) - {schema.VERSION_KEY})
    config = {k: v for k, v in ka["config"].items() if k != "exports"} == \
        {k: v for k, v in kb["config"].items() if k != "exports"}
    print(f"{a.name}/{schema.BENCH}: same keys {keys}, same rows {rows(ka) == rows(kb)}, same config {config}")
    return keys and rows(ka) == rows(kb) and config


def main() -> int:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    ok = True
    for sub in ("exp", "ctl"):
        a, b = before / sub, after / sub
        ok &= same_artifacts(a, b) & same_json(a, b) & same_bench(a, b)
    print("ALL SAME" if ok else "DIFFERENCES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
