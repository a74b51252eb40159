"""``python -m difforge``."""

from difforge.cli import main

main()
