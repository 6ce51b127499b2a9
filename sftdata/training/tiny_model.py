"""How ``--model`` becomes a model: ``builtin:tiny-llama3``, a local directory, or a hub id.

``builtin:tiny-llama3`` is a tiny, randomly initialised Llama with the real Llama-3 vocabulary.

Why it exists: the training path (shards -> collator -> SFTTrainer -> saved model) has to be runnable
and testable on a laptop CPU in seconds, with no download. A real Llama-3 checkpoint is gigabytes
and lives on the hub; this model has the same architecture class (``LlamaForCausalLM``), the same
vocabulary size (128256) and the same special-token ids as the built-in tokenizer, so shards
prepared for Llama-3 fit it unchanged and every check (vocabulary, tokenizer fingerprint) applies.
Its weights are random: it learns the shards, it knows nothing else.

Initialisation is seeded and does not disturb the global torch RNG, so two runs with the same seed
start from identical weights.
"""

from __future__ import annotations

from typing import Any

TINY_SPEC = "builtin:tiny-llama3"
TINY_VOCAB_SIZE = 128256  # the Llama-3 vocabulary: 128000 BPE ranks + 256 special tokens

# Small enough to train on CPU in seconds; the embedding (128256 x 64) dominates the size.
TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    # Tied input/output embeddings halve the size of the saved model (about 33 MB in float32).
    "tie_word_embeddings": True,
}

# Keyword arguments `model_init_kwargs` may carry for the tiny model; it is built, not loaded.
_TINY_INIT_KWARGS = {"attn_implementation", "dtype"}


def tiny_llama3_config(vocab_size: int = TINY_VOCAB_SIZE, **overrides: Any) -> Any:
    """The ``LlamaConfig`` of ``builtin:tiny-llama3`` (``overrides`` replace any field)."""
    from transformers import LlamaConfig

    from sftdata.tokenizer import load_tokenizer

    tok = load_tokenizer()
    settings: dict[str, Any] = {
        **TINY_SHAPE,
        "vocab_size": vocab_size,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eot_id,
        "pad_token_id": tok.pad_id,
    }
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_tiny_llama3(seed: int = 42, vocab_size: int = TINY_VOCAB_SIZE, **init_kwargs: Any) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` of the tiny shape, reproducible from ``seed``.

    ``init_kwargs`` accepts ``attn_implementation`` (``sdpa``, ``eager``, ...) and ``dtype``, the
    two ``model_init_kwargs`` that make sense for a model that is built rather than loaded.
    """
    import torch
    from transformers import LlamaForCausalLM

    unknown = sorted(set(init_kwargs) - _TINY_INIT_KWARGS)
    if unknown:
        raise ValueError(
            f"{TINY_SPEC} is built, not loaded; model_init_kwargs may only set "
            f"{', '.join(sorted(_TINY_INIT_KWARGS))}, not {', '.join(unknown)}"
        )
    extra = {"attn_implementation": init_kwargs["attn_implementation"]} if init_kwargs.get("attn_implementation") else {}
    config = tiny_llama3_config(vocab_size=vocab_size, **extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    dtype = init_kwargs.get("dtype")
    if dtype not in (None, "auto"):
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def model_vocab_size(spec: str, trust_remote_code: bool = False) -> int:
    """The vocabulary size from the model's config, read before any weights are loaded (cheap)."""
    if spec == TINY_SPEC:
        return TINY_VOCAB_SIZE
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    return int(config.get_text_config().vocab_size)


def load_model(spec: str, seed: int, init_kwargs: dict[str, Any]) -> Any:
    """``builtin:tiny-llama3`` built from ``seed``, else ``from_pretrained`` through TRL's loader.

    TRL's loader is what ``SFTTrainer`` itself uses for a model id: float32 unless
    ``model_init_kwargs`` says otherwise. ``device_map`` defaults to ``None`` so that the Trainer
    (and, under ``accelerate launch``/``torchrun``, each rank) places the model on its device.
    """
    if spec == TINY_SPEC:
        return build_tiny_llama3(seed=seed, **init_kwargs)
    from trl.trainer.utils import create_model_from_path

    return create_model_from_path(spec, **{"device_map": None, **init_kwargs})
