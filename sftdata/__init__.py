"""sftdata: chat fine-tuning records to Llama-3 token ids and response-only labels, as audited Arrow shards."""

__version__ = "0.1.0"
