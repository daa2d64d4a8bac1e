"""``python -m gpen_lightning [overrides]``: see ``--help`` and the README."""

from gpen_lightning.app import main

if __name__ == "__main__":
    main()
