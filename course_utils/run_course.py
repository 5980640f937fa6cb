"""Moved to ``course_utils.instructor.run_course``: this old name is an alias, kept for one release."""
from .instructor import alias

alias(__name__, "run_course")
