"""Instructor tools: trusted grading of exercise notebooks (see the instructor guide in the book's appendix).

Modules:
    notebooks  reading, restoring and filling nbgrader notebooks (no student code runs here)
    probes     grading specs (grading/<assignment>.py): probes and the comparison of their outputs
"""
