"""A tiny llama-architecture GGUF model with random weights, written by the ``gguf`` package.

Nothing is downloaded: two layers of width 64 and a vocabulary of word pieces (plus the byte
tokens SentencePiece falls back to) make a 200 KB file that llama.cpp loads and runs in
milliseconds. Its answers are noise, but real tokens, streamed one per chunk by a real server.
The output rows of the special and byte tokens are zero, so greedy decoding picks words (whose
random logits are mostly above zero): every chunk carries text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

EMBED, HEADS, FFN, LAYERS, CONTEXT = 64, 4, 128, 2, 512
WORDS = [f"\u2581{w}" for w in ("the", "a", "model", "rolls", "out", "wise", "to", "of", "and", "is")] + [
    f"\u2581w{i}" for i in range(90)
]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def write_tiny_llama(path: Path, seed: int = 18) -> Path:
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *WORDS]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *([TokenType.BYTE] * 256)]
    types += [TokenType.NORMAL] * len(WORDS)
    vocab = len(tokens)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("rollwise-tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(WORDS))])
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weights(*shape: int) -> np.ndarray:
        return np.asarray(rng.standard_normal(shape) / np.sqrt(shape[-1]), dtype=np.float32)

    writer.add_tensor("token_embd.weight", weights(vocab, EMBED))
    for i in range(LAYERS):
        block = f"blk.{i}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FFN, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(EMBED, FFN))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, np.float32))
    output = weights(vocab, EMBED) * 4
    output[:259] = 0.0  # special and byte tokens: never the greedy choice
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
