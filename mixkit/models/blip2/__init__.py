"""mixkit.models.blip2."""
