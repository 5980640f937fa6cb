"""pytest settings for the whole repository: notebooks run in quick mode unless told otherwise."""
import os

os.environ.setdefault("COURSE_QUICK", "1")
