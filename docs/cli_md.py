"""Write docs/cli.md from the argparse parsers: `python docs/cli_md.py`."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from toolkit.cli import reference_markdown  # noqa: E402

(HERE / "cli.md").write_text(reference_markdown())
print(f"wrote {HERE / 'cli.md'}")
