"""HTTP adapter: the FastAPI app, its error mapping and routes."""
