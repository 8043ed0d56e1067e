"""Write a tiny random-weight llama GGUF with SmolLM2's tokenizer (for GPU smoke tests).

usage: python make_tiny_gguf.py SOURCE.gguf OUT.gguf   (needs the `gguf` package)
"""

import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

src, out = sys.argv[1], sys.argv[2]
N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = 128, 2, 2, 256, 2
HEAD_DIM = N_EMBD // N_HEAD

reader = GGUFReader(src)
w = GGUFWriter(out, "llama")
w.add_name("tiny-random-smollm2-tokenizer")
w.add_context_length(2048)
w.add_embedding_length(N_EMBD)
w.add_block_count(N_LAYER)
w.add_feed_forward_length(N_FF)
w.add_head_count(N_HEAD)
w.add_head_count_kv(N_HEAD_KV)
w.add_rope_dimension_count(HEAD_DIM)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_file_type(1)  # mostly F16

n_vocab = 0
for name, field in reader.fields.items():
    if not name.startswith("tokenizer."):
        continue
    vtype = field.types[0]
    value = field.contents()
    sub = field.types[1] if vtype == GGUFValueType.ARRAY and len(field.types) > 1 else None
    if name == "tokenizer.ggml.tokens":
        n_vocab = len(value)
    w.add_key_value(name, value, vtype, sub_type=sub)
w.add_vocab_size(n_vocab)

rng = np.random.default_rng(0)


def rnd(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.02).astype(np.float16)


w.add_tensor("token_embd.weight", rnd(n_vocab, N_EMBD))
w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
kv = N_HEAD_KV * HEAD_DIM
for i in range(N_LAYER):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor(p + "attn_q.weight", rnd(N_EMBD, N_EMBD))
    w.add_tensor(p + "attn_k.weight", rnd(kv, N_EMBD))
    w.add_tensor(p + "attn_v.weight", rnd(kv, N_EMBD))
    w.add_tensor(p + "attn_output.weight", rnd(N_EMBD, N_EMBD))
    w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor(p + "ffn_gate.weight", rnd(N_FF, N_EMBD))
    w.add_tensor(p + "ffn_up.weight", rnd(N_FF, N_EMBD))
    w.add_tensor(p + "ffn_down.weight", rnd(N_EMBD, N_FF))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", out, "vocab", n_vocab)
