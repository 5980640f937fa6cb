"""Moved to ``course_utils.instructor.grade``: this old name is an alias, kept for one release."""
from .instructor import alias

alias(__name__, "grade")
