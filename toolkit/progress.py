"""Progress bars on every step that can take more than a few seconds (training within each epoch,
export per variant, parity over the images, bench per row), with tqdm. Quiet when stderr is not a
terminal (CI logs stay short) or with ``--quiet``; the one-line summaries are printed either way
unless ``--quiet``.
"""

from __future__ import annotations

import contextlib
import os
import sys

ENV_OFF = "TOOLKIT_NO_PROGRESS"


def enabled(verbose: bool = True) -> bool:
    """Bars only for a person watching: verbose, stderr a terminal, not switched off."""
    return bool(verbose) and sys.stderr.isatty() and not os.environ.get(ENV_OFF)


@contextlib.contextmanager
def bar(total: int, desc: str, unit: str = "it", verbose: bool = True):
    """A tqdm bar on stderr that disappears when done (``leave=False``); a no-op object when off."""
    if not enabled(verbose):
        yield _Off()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, **tqdm_options()) as progress:
        yield progress


def tqdm_options() -> dict:
    """stderr, cleared when done, sized to the terminal: a terminal that reports a size of 0 x 0 (a
    pseudo-terminal nobody sized) gets 80 x 24, since tqdm draws nothing at zero rows."""
    import shutil

    size = shutil.get_terminal_size(fallback=(80, 24))
    return {"file": sys.stderr, "leave": False, "ncols": size.columns, "nrows": size.lines, "mininterval": 0.2,
            "smoothing": 0.1}


class _Off:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def set_description_str(self, text: str) -> None:
        pass


def say(message: str, verbose: bool = True) -> None:
    """A summary line on stderr that does not break a bar being drawn."""
    if not verbose:
        return
    if enabled(verbose):
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
