"""Scripts that build the toy world (not shipped in the package): ``python -m toyworld.build``."""
