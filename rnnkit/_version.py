"""The version of rnnkit: written here only (setup.py reads this file)."""
__version__ = "0.1.0"
