"""difforge.export."""
