"""difforge.profile."""
