"""LoRA adapters per request: resolution and download, and the loaded-adapter LRU.

The request's part (``inference.lora_spec``) lives beside the schema so the foundations never
import this package; ``sources`` finds and fetches adapter files under the deployment's rules,
``download`` fetches URL adapters, and ``loaded`` keeps loaded adapters within bounds.
"""
