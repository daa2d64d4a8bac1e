"""``python -m gpen_lightning [overrides]``: see ``--help`` and the README."""

import gpen_lightning  # noqa: F401  (sets allocator options before torch is imported)
from gpen_lightning.app import main

if __name__ == "__main__":
    main()
