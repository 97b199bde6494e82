"""Python-backend models: code that runs inside tritonserver (its stub process), not in the gateway."""
