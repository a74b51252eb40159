"""difforge.calib."""
