"""facilities: safety and availability service for e-bike charging stations and bicycle garages."""

__version__ = "0.1.0"
