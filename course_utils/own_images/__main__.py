"""``python -m course_utils.own_images train|search|make-folder ...``: see ``cli``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
