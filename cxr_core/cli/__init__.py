"""The ``cxr`` command line: argument parsing and output only; every command calls library functions."""
