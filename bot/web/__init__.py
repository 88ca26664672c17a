"""Mobile web pages; each module exposes setup(app, runtime) adding its routes."""
