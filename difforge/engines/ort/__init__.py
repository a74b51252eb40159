"""difforge.engines.ort."""
