"""mixkit.serve."""
