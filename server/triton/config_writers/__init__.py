"""Writers of the Triton repository's `config.pbtxt` files (CPU models, GPU engines and their ensembles)."""
