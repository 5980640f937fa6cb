"""The instructor's tools, apart from what lessons import: student copies (``assign``), the autograder
(``grade``), the Colab badge sync (``colab``) and the course runner (``run_course``); the runner and the
grader run notebooks side by side through ``workers``.

Run each as ``python -m course_utils.instructor.<tool>``. Lessons never import this package.
"""
