"""Wire formats <-> core. Pure functions: no I/O, no web framework."""
