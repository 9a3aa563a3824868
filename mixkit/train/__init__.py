"""mixkit.train."""
