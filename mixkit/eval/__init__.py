"""mixkit.eval."""
