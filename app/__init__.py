"""The model-serving microservice: api (HTTP) -> core (service, engine, compute) -> backends."""

__version__ = "0.1.0"
