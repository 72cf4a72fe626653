"""nbgrader configuration for the course.

solutions/ holds the source notebooks (solution and hidden-test markers);
exercises/ is the student release generated from them (`make exercises`).
"""
import os

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "transformer-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store"]

# The stub students see in place of the solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Deleted test cells are put back before grading instead of silently needing manual grading.
c.OverwriteCells.add_missing_cells = True

# Grading: per-cell timeout; a kernel that dies or hangs fails the affected cells.
c.ExecutePreprocessor.timeout = 60
c.ExecutePreprocessor.interrupt_on_timeout = True
c.Execute.max_tries = 1
