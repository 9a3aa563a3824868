"""mixkit.apps."""
