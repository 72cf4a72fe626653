"""course_lib: the reference implementation of everything the course explains.

One concept per module; each module's docstring names the chapter that explains it.
Dimension names used everywhere: B batch, T queries, S keys, D model width,
H heads, Dh head width, V vocabulary, L layers.
"""

__version__ = "0.1.0"
