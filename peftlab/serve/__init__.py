"""Owns `peftlab serve`: the routes (app.py's APIRouter on app.state), the HTTP guard, the scheduler (batching only), the adapter pool.
May import artifacts, errors, models, methods, data and generation; only cli imports serve."""
