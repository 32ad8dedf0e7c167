"""ngxlab: nginx's master/worker inter-process communication, re-implemented in Python.

One module per nginx source file it mirrors (channel, process, process_cycle, ...),
and ``ngxlab.lab`` for the instruments the book's chapters use.
"""

__version__ = "0.1.0"
