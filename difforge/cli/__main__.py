"""``python -m difforge.cli``."""

from difforge.cli import main

main()
