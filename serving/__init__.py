"""The serving API: a thin FastAPI layer that reads, scores and filters; it never trains.

`serving.main.create_app(settings)` builds the app. The item factors of the model version in
service are held in memory (`served_model`), user vectors and history are read from Redis
per request, and every answer says which model version and which source it came from.
"""

from recsys.errors import RecsysError


class ServingError(RecsysError):
    """Base of the errors the serving layer raises on purpose."""
