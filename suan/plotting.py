"""matplotlib is an optional extra (``pip install 'suan[plot]'``): jobs that draw plots ask here,
and without it say so in one line and leave the plots (and the reports' links to them) out."""
from __future__ import annotations

import sys
from typing import Optional

INSTALL_HINT = "pip install 'suan[plot]'"


def pyplot(what: str) -> Optional[object]:
    """``matplotlib.pyplot`` on the Agg backend, or None after one notice line naming ``what``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{what}: skipped, matplotlib is not installed ({INSTALL_HINT})", file=sys.stderr, flush=True)
        return None
    return plt
