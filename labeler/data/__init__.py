"""Data in and out: imports, exports, and project folders (`labeler init`, the bundled example)."""
