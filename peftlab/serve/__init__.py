"""Owns `peftlab serve`: the routes (app.py's APIRouter on app.state), the HTTP guard, the scheduler (batching only), the adapter pool.
May import generation, models, methods, artifacts and errors; only cli imports serve."""
