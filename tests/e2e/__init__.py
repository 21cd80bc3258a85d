"""End-to-end tests: OpenWebUI 0.12.4 in its own venv, driven by a real headless Chromium."""
