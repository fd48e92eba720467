"""``python -m corral``: the ``corral`` command."""

from .cli import main

if __name__ == "__main__":  # spawn workers re-import this module as __mp_main__
    raise SystemExit(main())
