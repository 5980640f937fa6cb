"""``python -m course_utils.own_images train|index|search|evaluate|calibrate|make-folder ...`` (or under
``torchrun``): see ``cli``."""
import os
import sys

from .cli import main

if __name__ == "__main__":
    status = main()
    if "RANK" in os.environ:  # under torchrun: leave without the interpreter's clean-up, as course_utils.distributed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
