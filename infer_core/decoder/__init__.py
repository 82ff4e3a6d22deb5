"""The toy decoder the KV-cache, attention and serving experiments run: its model (``model.py``), KV caches
(``kv_cache.py``), generation strategies (``decode.py``) and attention kernels (``attention.py``: FlashAttention,
flash-decoding, the dense form)."""
