/*
 * make_lmx_adapters.c - test helper for tests/interop/test_adapters.py:
 * writes an adapter folder with lmx's own writer (models/adapters_io.c),
 * for mlx-lm to load.
 *
 *   make_lmx_adapters MODEL_DIR OUT_DIR lora|dora|full NUM_LAYERS RANK SCALE SEED
 *
 * lmx_adapters_create picks the modules and initialises a (seeded) and
 * DoRA's m; b is then filled with deterministic non-zero values (and m and
 * full weights perturbed) so that the adapter changes the model's output.
 * adapter_config.json gets the keys mlx-lm's loader reads.
 */
#include "lmx.h"
#include "generate/engine.h"
#include "models/adapters.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL_DIR OUT_DIR lora|dora|full NUM_LAYERS RANK SCALE SEED\n", argv[0]);
        return 2;
    }
    lmx_adapter_config cfg = {0};
    cfg.type = !strcmp(argv[3], "dora") ? LMX_FT_DORA : !strcmp(argv[3], "full") ? LMX_FT_FULL : LMX_FT_LORA;
    cfg.num_layers = atoi(argv[4]);
    cfg.rank = atoi(argv[5]);
    cfg.scale = (float)atof(argv[6]);
    uint64_t seed = strtoull(argv[7], NULL, 10);
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.device = "cpu";
    lo.no_tokenizer = true;
    lmx_model *m;
    lmx_adapters *ad;
    if (lmx_load(argv[1], &lo, &m) || lmx_adapters_create(&m->tf, &cfg, seed, &ad)) {
        fprintf(stderr, "%s\n", lmx_last_error());
        return 1;
    }
    uint64_t st = seed * 2654435761u + 1;
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        lmx_array *arrs[4] = {&e->lora.b, &e->lora.m, &e->full, &e->full_bias};
        for (int k = 0; k < 4; k++) {
            if (lmx_array_empty(arrs[k])) continue;
            float *v = arrs[k]->data;
            for (int64_t j = 0; j < lmx_array_numel(arrs[k]); j++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                float u = (float)(st >> 40) / 16777216.0f - 0.5f; /* [-0.5, 0.5) */
                if (k == 0) v[j] = 0.05f * u;                     /* lora_b */
                else if (k == 1) v[j] *= 1.0f + 0.2f * u;          /* DoRA magnitudes */
                else v[j] += 0.1f * u;                             /* full weights */
            }
        }
    }
    if (lmx_adapters_save(ad, argv[2], -1)) {
        fprintf(stderr, "%s\n", lmx_last_error());
        return 1;
    }
    char path[4096], json[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", argv[2]);
    if (cfg.type == LMX_FT_FULL)
        snprintf(json, sizeof json, "{\n    \"fine_tune_type\": \"full\",\n    \"lora_parameters\": null,\n"
                 "    \"num_layers\": %d\n}", cfg.num_layers);
    else
        snprintf(json, sizeof json, "{\n    \"fine_tune_type\": \"%s\",\n    \"lora_parameters\": {\n"
                 "        \"rank\": %d,\n        \"scale\": %g,\n        \"dropout\": 0.0\n    },\n"
                 "    \"num_layers\": %d\n}", argv[3], cfg.rank, (double)cfg.scale, cfg.num_layers);
    FILE *f = fopen(path, "w");
    if (!f || fputs(json, f) < 0 || fclose(f)) {
        fprintf(stderr, "%s: cannot write\n", path);
        return 1;
    }
    printf("%d modules, %lld parameters\n", ad->n, (long long)lmx_adapters_n_params(ad));
    lmx_adapters_free(ad);
    lmx_model_free(m);
    return 0;
}
