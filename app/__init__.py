"""The model-serving microservice: routes -> engine (queue, batching, metrics) -> backend."""

__version__ = "0.1.0"
