"""Progress bars with the running loss (tqdm), quiet when not on a terminal if asked."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A bar over ``total`` steps; call ``bar.set_postfix(loss=...)`` and ``bar.update()``."""
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not enabled, file=sys.stderr, mininterval=0.5)
