"""Helpers for the deep metric learning course.

Import modules by name, e.g. ``from course_utils import data, evaluation``.
Importing this package does nothing but define names: seeding and device choice
happen in ``setup(seed)``, called once in each notebook's setup cell.
"""
from .session import Config, setup

__all__ = ["Config", "setup"]
