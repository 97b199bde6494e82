"""The browser playground served by the gateway."""
