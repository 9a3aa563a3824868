"""mixkit.data."""
