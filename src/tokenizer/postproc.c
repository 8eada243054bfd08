/* postproc.c - HF post-processors applied when special tokens are added:
 * TemplateProcessing (single sequence), RobertaProcessing / BertProcessing
 * (cls A sep), ByteLevel (no change to ids), Sequence. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void tok_post_free(tok_post *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_kids; i++) tok_post_free(p->kids[i]);
    free(p->kids);
    free(p->single);
    free(p);
}

static bool push_item(tok_post *p, int32_t v) {
    int32_t *n = realloc(p->single, (p->n_single + 1) * sizeof *n);
    if (!n) return false;
    p->single = n;
    p->single[p->n_single++] = v;
    return true;
}

/* ["</s>", 2] -> 2 */
static int32_t pair_id(const cJSON *a) {
    const cJSON *id = cJSON_GetArrayItem(a, 1);
    return cJSON_IsNumber(id) ? (int32_t)id->valuedouble : -1;
}

lmx_status tok_post_parse(const cJSON *j, const char *path, const lmx_tokenizer *t, tok_post **out) {
    (void)t;
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const char *type = tok_jstr(j, "type");
    if (!type) return lmx_err(LMX_ERR_FORMAT, "%s: post_processor: missing \"type\"", path);
    tok_post *p = calloc(1, sizeof *p);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "%s: post_processor: out of memory", path);
    lmx_status st = LMX_OK;
    if (!strcmp(type, "ByteLevel")) p->type = TPP_NOOP;
    else if (!strcmp(type, "TemplateProcessing")) {
        p->type = TPP_TEMPLATE;
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(j, "single");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        const cJSON *e;
        if (!cJSON_IsArray(single)) st = lmx_err(LMX_ERR_FORMAT, "%s: TemplateProcessing: missing \"single\"", path);
        else cJSON_ArrayForEach(e, single) {
            const cJSON *stok = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
            const cJSON *seq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
            if (seq) {
                if (!push_item(p, -1)) st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
            } else if (stok) {
                const char *name = tok_jstr(stok, "id");
                const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(sp, name) : NULL;
                const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
                if (!cJSON_IsArray(ids)) {
                    st = lmx_err(LMX_ERR_FORMAT, "%s: TemplateProcessing: special token \"%s\" has no ids", path, name ? name : "?");
                    break;
                }
                const cJSON *x;
                cJSON_ArrayForEach(x, ids) if (cJSON_IsNumber(x) && !push_item(p, (int32_t)x->valuedouble))
                    st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
            } else {
                st = lmx_err(LMX_ERR_FORMAT, "%s: TemplateProcessing: bad item in \"single\"", path);
                break;
            }
        }
    } else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        p->type = TPP_TEMPLATE;
        int32_t cls = pair_id(cJSON_GetObjectItemCaseSensitive(j, "cls"));
        int32_t sep = pair_id(cJSON_GetObjectItemCaseSensitive(j, "sep"));
        if (cls < 0 || sep < 0) st = lmx_err(LMX_ERR_FORMAT, "%s: %s: bad cls/sep", path, type);
        else if (!push_item(p, cls) || !push_item(p, -1) || !push_item(p, sep))
            st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    } else if (!strcmp(type, "Sequence")) {
        p->type = TPP_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
        if (!cJSON_IsArray(arr)) st = lmx_err(LMX_ERR_FORMAT, "%s: post_processor Sequence: missing \"processors\"", path);
        else {
            p->kids = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->kids);
            const cJSON *e;
            cJSON_ArrayForEach(e, arr) {
                if (st != LMX_OK) break;
                tok_post *k;
                st = tok_post_parse(e, path, t, &k);
                if (st == LMX_OK && k) p->kids[p->n_kids++] = k;
            }
        }
    } else {
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: post_processor type \"%s\" is not supported", path, type);
    }
    if (st != LMX_OK) {
        tok_post_free(p);
        return st;
    }
    *out = p;
    return LMX_OK;
}

void tok_post_apply(const tok_post *p, tok_ids *ids) {
    if (!p) return;
    if (p->type == TPP_SEQ) {
        for (size_t i = 0; i < p->n_kids; i++) tok_post_apply(p->kids[i], ids);
        return;
    }
    if (p->type != TPP_TEMPLATE) return;
    tok_ids o = {0};
    for (size_t i = 0; i < p->n_single; i++) {
        if (p->single[i] >= 0) tok_ids_push(&o, p->single[i]);
        else
            for (size_t k = 0; k < ids->n; k++) tok_ids_push(&o, ids->p[k]);
    }
    if (o.oom) {
        ids->oom = true;
        tok_ids_free(&o);
        return;
    }
    tok_ids_free(ids);
    *ids = o;
}
