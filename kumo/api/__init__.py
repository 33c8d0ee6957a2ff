"""The REST face of Kumo (FastAPI): API.md's resources, error bodies and /openapi.json."""

from kumo.api.app import create_app

__all__ = ["create_app"]
