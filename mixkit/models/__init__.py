"""mixkit.models."""
