"""``cnnlab serve``: try trained runs in the browser, and a JSON prediction API."""

from .app import MAX_PIXELS, MAX_UPLOAD_BYTES, create_app, find_runs

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "create_app", "find_runs", "serve"]


def serve(paths, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 5.0,
          max_pixels: int = MAX_PIXELS, log_level: str = "warning") -> None:
    """Run the server until Ctrl-C."""
    import uvicorn

    app = create_app(paths, int(max_upload_mb * 1024 * 1024), max_pixels)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
