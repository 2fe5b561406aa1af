"""Loopback stand-ins for the central APIs, speaking each seed's documented wire format."""
