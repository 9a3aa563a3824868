"""Fixtures shared by the AppFlow tests (tiny checkpoints built once per session)."""

from tests.apps.appflow_models import image_folder, vision_models  # noqa: F401
