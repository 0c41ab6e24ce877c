"""Caseloom: a low-code case-management platform in the style of ServiceNow."""

__version__ = "0.1.0"
