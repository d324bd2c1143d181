"""LoRA adapters per request: references, resolution and download, and the loaded-adapter LRU.

``spec`` (the request's part, imported by the schema) stays light; ``sources`` finds and fetches
adapter files under the deployment's rules; ``cache`` keeps loaded adapters within bounds.
"""
