/*
 * adapters.h - LoRA / DoRA / full fine-tuning adapters on a loaded model:
 * which modules get one (mlx-lm's linear_to_lora_layers), their
 * initialisation, attaching them to the model's projections, and the
 * adapter folder as mlx-lm reads and writes it (MLX-LM-SPEC §4c):
 * adapter_config.json + adapters.safetensors (+ NNNNNNN_adapters.safetensors
 * checkpoints). The math of an attached adapter is in lora.h.
 *
 * Modules (relative to "model.layers.N.", the MLX module paths, which are
 * the HF names for these families; by default every Linear of a block):
 *   llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3(_text):
 *       self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj
 *   phi3:       self_attn.qkv_proj, self_attn.o_proj, mlp.gate_up_proj, mlp.down_proj
 *               (fused: one entry feeds the q/k/v or gate/up row views)
 *   phi:        self_attn.{q,k,v}_proj, self_attn.dense, mlp.fc1, mlp.fc2
 *   starcoder2: self_attn.{q,k,v,o}_proj, mlp.c_fc, mlp.c_proj
 * lora_parameters.keys may also name model-level modules by their full
 * path ("lm_head" when untied) as mlx-lm matches them. MoE models
 * (mixtral, qwen3_moe) and embeddings as keys are LMX_ERR_UNSUPPORTED.
 *
 * Entries: LoRA/DoRA — one per module, named by its MLX path, with
 * a [r, in] ~ U(-1/sqrt(in), 1/sqrt(in)) (in = unpacked input size),
 * b [out, r] = 0, DoRA m [out] = row norms of the dequantized weight (f32).
 * Full — one per module of the last num_layers blocks (every norm and
 * Linear: mlx-lm trains all of a block's parameters), named by its path,
 * holding f32 copies (full, full_bias) that attaching swaps into the model;
 * its file tensors are "<module>.weight"/".bias" in the base dtype.
 * Entries are sorted by name (the order of adapters.safetensors' header).
 *
 * The set assumes Hugging Face row order: GGUF models (q/k rows permuted)
 * are refused by the loaders above (generate/load.c, convert/fuse.c).
 */
#ifndef LMX_MODELS_ADAPTERS_H
#define LMX_MODELS_ADAPTERS_H

#include "models/config.h"
#include "models/lora.h"

/* Builds the set for cfg on model m (last cfg->num_layers blocks; <= 0 or
 * more than the model has = all, as mlx-lm's slice), initialised from seed,
 * and attaches it. cfg is copied. A key that names no module of the model
 * is LMX_ERR_NOT_FOUND; a quantized or GGUF-block weight under full
 * fine-tuning LMX_ERR_UNSUPPORTED. */
lmx_status lmx_adapters_create(lmx_transformer *m, const lmx_adapter_config *cfg, uint64_t seed,
                               lmx_adapters **out);
/* The same with a module-path prefix (lmx_adapters_prefix). */
lmx_status lmx_adapters_create_ex(lmx_transformer *m, const char *prefix, const lmx_adapter_config *cfg,
                                  uint64_t seed, lmx_adapters **out);
/* "language_model." when mlx-lm wraps the language model (config.json
 * model_type "gemma3"), else "". */
const char *lmx_adapters_prefix(const lmx_config *model_cfg);

/* Points the targets' lora at the entries (LoRA/DoRA) or swaps the full
 * copies into the model; detach restores the model as loaded. Idempotent. */
void lmx_adapters_attach(lmx_adapters *ad);
void lmx_adapters_detach(lmx_adapters *ad);
/* Detaches and frees (NULL ok). */
void lmx_adapters_free(lmx_adapters *ad);
/* Generation on a device backend: moves the LoRA/DoRA arrays the forward
 * reads (a, b, DoRA's frozen row factors; fused rows' views re-pointed) into
 * b's memory, once, after the model was moved (no-op on a host backend).
 * The set can no longer be trained or saved. Full fine-tuned sets: refused. */
lmx_status lmx_adapters_to_backend(lmx_adapters *ad, lmx_backend *b);
/* The entry named `name`, or NULL. */
lmx_adapter_entry *lmx_adapters_find(const lmx_adapters *ad, const char *name);
/* Trainable parameter count (elements of a, b, m or the full copies). */
int64_t lmx_adapters_n_params(const lmx_adapters *ad);

/* A projection's weight [N, K] as f32, dequantized the way mx.dequantize
 * rounds it (MLX affine: in the scales' dtype; fp modes: bfloat16; GGUF
 * blocks: their dequantizer). out holds N·K floats. */
lmx_status lmx_linear_weight_f32(const lmx_linear *l, float *out);
/* The dtype mx.dequantize returns for l's weight (its own dtype when not
 * MLX-packed; F32 for GGUF blocks). */
lmx_dtype lmx_linear_float_dtype(const lmx_linear *l);

/* ---- adapters_io.c ---------------------------------------------------------- */

/* adapter_config.json: fine_tune_type (default "lora"), num_layers (or the
 * old lora_layers), lora_parameters {rank, scale, dropout[, keys]} (required
 * unless full). Errors name the file and field. */
lmx_status lmx_adapter_config_parse(const char *text, size_t len, const char *path, lmx_adapter_config *cfg);
lmx_status lmx_adapter_config_read(const char *path, lmx_adapter_config *cfg);
void lmx_adapter_config_free(lmx_adapter_config *cfg);
/* Deep copy (keys duplicated). */
lmx_status lmx_adapter_config_copy(lmx_adapter_config *dst, const lmx_adapter_config *src);

/* Loads an adapter folder (adapter_config.json + adapters.safetensors) or
 * one .safetensors file of such a folder (a checkpoint; the config is read
 * beside it) onto m and attaches it. Strict: every tensor must be one the
 * config creates, with its shape, in F32/BF16/F16 (converted to f32), and
 * every LoRA/DoRA tensor must be present. */
lmx_status lmx_adapters_load(lmx_transformer *m, const char *path, lmx_adapters **out);
lmx_status lmx_adapters_load_ex(lmx_transformer *m, const char *prefix, const char *path, lmx_adapters **out);
/* Reads one adapters .safetensors file into an existing set (the same
 * strict checks; resuming training). */
lmx_status lmx_adapters_read_weights(lmx_adapters *ad, const char *file);
/* Writes dir/adapters.safetensors (mx.save_safetensors layout: sorted keys,
 * "__metadata__": null; lora_a [in, r], lora_b [r, out], m [out] in f32;
 * full: the tensors in the base dtype) and, when iteration >= 0, the
 * checkpoint dir/NNNNNNN_adapters.safetensors too; each atomically. dir is
 * created when missing. adapter_config.json is written by the trainer. */
lmx_status lmx_adapters_save(const lmx_adapters *ad, const char *dir, int64_t iteration);
/* Writes only `file`, in the same format. */
lmx_status lmx_adapters_save_file(const lmx_adapters *ad, const char *file);

#endif
