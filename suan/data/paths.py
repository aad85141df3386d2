"""Where datasets are cached: ``data_dir``, else ``$SUAN_DATA``, else ``~/.cache/suan``."""
from __future__ import annotations

import os
from typing import Optional


def cache_root(data_dir: Optional[str] = None) -> str:
    root = data_dir or os.environ.get("SUAN_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "suan")
    os.makedirs(root, exist_ok=True)
    return root
