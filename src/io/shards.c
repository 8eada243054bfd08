/* shards.c - the safetensors files of a model folder as one hashed tensor set. */
#include "io/shards.h"

#include "io/io_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_NAME "model.safetensors.index.json"

struct lmx_st_set {
    lmx_st_file **files;
    size_t n_files;
    size_t n; /* tensors over all files */
    uint32_t *file_of; /* tensor i lives in files[file_of[i]] ... */
    uint32_t *local;   /* ... as its local[i]-th tensor */
    lmx_strmap index;
    bool has_index;
};

void lmx_st_set_close(lmx_st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_files; i++) lmx_st_close(s->files[i]);
    free(s->files);
    free(s->file_of);
    free(s->local);
    lmx_strmap_free(&s->index);
    free(s);
}

/* Opens every path into s->files, then indexes all tensors. */
static lmx_status set_build(lmx_st_set *s, char *const *paths, size_t n) {
    s->files = calloc(n ? n : 1, sizeof *s->files);
    if (!s->files) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        LMX_TRY(lmx_st_open(paths[i], &s->files[i]));
        s->n_files++;
        total += lmx_st_n_tensors(s->files[i]);
    }
    s->file_of = calloc(total ? total : 1, sizeof *s->file_of);
    s->local = calloc(total ? total : 1, sizeof *s->local);
    if (!s->file_of || !s->local || !lmx_strmap_init(&s->index, total))
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (size_t f = 0; f < s->n_files; f++) {
        size_t nt = lmx_st_n_tensors(s->files[f]);
        for (size_t j = 0; j < nt; j++) {
            const lmx_st_tensor *t = lmx_st_tensor_at(s->files[f], j);
            int64_t prev = lmx_strmap_put(&s->index, t->name, strlen(t->name), (int64_t)s->n);
            if (prev >= 0) {
                char qb[160];
                return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': name: also in %s", lmx_st_path(s->files[f]),
                               lmx_io_printable(t->name, strlen(t->name), qb, sizeof qb),
                               lmx_st_path(s->files[s->file_of[prev]]));
            }
            s->file_of[s->n] = (uint32_t)f;
            s->local[s->n] = (uint32_t)j;
            s->n++;
        }
    }
    return LMX_OK;
}

lmx_status lmx_st_set_open_files(const char *const *paths, size_t n, lmx_st_set **out) {
    *out = NULL;
    lmx_st_set *s = calloc(1, sizeof *s);
    if (!s) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status st = set_build(s, (char *const *)paths, n);
    if (st) {
        lmx_st_set_close(s);
        return st;
    }
    *out = s;
    return LMX_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_list(char **v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Every *.safetensors in dir: model* when any, else all but adapters. */
static lmx_status list_dir(const char *dir, char ***out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return lmx_err(LMX_ERR_IO, "%s: cannot open folder", dir);
    char **names = NULL;
    size_t n = 0, cap = 0, n_model = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (nm[0] == '.' || !ends_with(nm, ".safetensors") || strncmp(nm, "adapter", 7) == 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = lmx_strdup(nm))) break;
        if (strncmp(nm, "model", 5) == 0) n_model++;
        n++;
    }
    closedir(d);
    if (e) {
        free_list(names, n);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    if (n_model) { /* keep only model* */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (strncmp(names[i], "model", 5) == 0) names[k++] = names[i];
            else free(names[i]);
        }
        n = k;
    }
    if (n == 0) {
        free(names);
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: no *.safetensors files", dir);
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char *p = lmx_path_join(dir, names[i]);
        if (!p) {
            free_list(names, n);
            return lmx_err(LMX_ERR_NOMEM, "out of memory");
        }
        free(names[i]);
        names[i] = p;
    }
    *out = names;
    *n_out = n;
    return LMX_OK;
}

static bool safe_rel_name(const char *s) {
    if (!s[0] || s[0] == '/') return false;
    for (const char *p = s; *p;) { /* no ".." component */
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!q) break;
        p = q + 1;
    }
    return true;
}

/* Reads the index, opens the files it names and checks every entry. */
static lmx_status open_indexed(lmx_st_set *s, const char *dir, const char *ipath) {
    char *text;
    size_t len;
    LMX_TRY(lmx_read_file(ipath, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return lmx_err(LMX_ERR_FORMAT, "%s: invalid JSON", ipath);
    lmx_status st = LMX_OK;
    char **files = NULL, **paths = NULL;
    size_t nf = 0;
    char qb[160];
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !wm) {
        st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: missing", ipath);
        goto done;
    }
    if (!cJSON_IsObject(wm)) {
        st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: not an object", ipath);
        goto done;
    }
    size_t n = (size_t)cJSON_GetArraySize(wm);
    files = calloc(n ? n : 1, sizeof *files);
    paths = calloc(n ? n : 1, sizeof *paths);
    if (!files || !paths) {
        st = lmx_err(LMX_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (const cJSON *c = wm->child; c; c = c->next) {
        const char *tn = c->string ? c->string : "";
        if (!cJSON_IsString(c)) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: tensor '%s': file name is not a string", ipath,
                         lmx_io_printable(tn, strlen(tn), qb, sizeof qb));
            goto done;
        }
        if (!safe_rel_name(c->valuestring)) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: tensor '%s': file name '%s' leaves the folder", ipath,
                         lmx_io_printable(tn, strlen(tn), qb, sizeof qb), c->valuestring);
            goto done;
        }
        files[nf++] = c->valuestring; /* borrowed from root */
    }
    qsort(files, nf, sizeof *files, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < nf; i++)
        if (k == 0 || strcmp(files[k - 1], files[i]) != 0) files[k++] = files[i];
    nf = k;
    if (nf == 0) {
        st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: empty", ipath);
        goto done;
    }
    for (size_t i = 0; i < nf; i++) {
        paths[i] = lmx_path_join(dir, files[i]);
        if (!paths[i]) {
            st = lmx_err(LMX_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (!lmx_file_exists(paths[i])) {
            st = lmx_err(LMX_ERR_NOT_FOUND, "%s: weight_map: file '%s' not found in %s", ipath, files[i], dir);
            goto done;
        }
    }
    st = set_build(s, paths, nf);
    if (st) goto done;
    for (const cJSON *c = wm->child; c; c = c->next) {
        const lmx_st_file *f = NULL;
        const lmx_st_tensor *t = lmx_st_set_find(s, c->string, &f);
        lmx_io_printable(c->string, strlen(c->string), qb, sizeof qb);
        if (!t) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: tensor '%s': not in %s", ipath, qb, c->valuestring);
            goto done;
        }
        char *want = lmx_path_join(dir, c->valuestring);
        bool same = want && strcmp(want, lmx_st_path(f)) == 0;
        free(want);
        if (!same) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: weight_map: tensor '%s': listed in %s but found in %s", ipath, qb,
                         c->valuestring, lmx_st_path(f));
            goto done;
        }
    }
done:
    if (paths)
        for (size_t i = 0; i < nf; i++) free(paths[i]);
    free(paths);
    free(files);
    cJSON_Delete(root);
    return st;
}

lmx_status lmx_st_set_open(const char *dir, lmx_st_set **out) {
    *out = NULL;
    if (!lmx_is_dir(dir)) return lmx_err(LMX_ERR_NOT_FOUND, "%s: not a folder", dir);
    lmx_st_set *s = calloc(1, sizeof *s);
    if (!s) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    char *ipath = lmx_path_join(dir, INDEX_NAME);
    lmx_status st;
    if (!ipath) {
        st = lmx_err(LMX_ERR_NOMEM, "out of memory");
    } else if (lmx_file_exists(ipath)) {
        s->has_index = true;
        st = open_indexed(s, dir, ipath);
    } else {
        char **paths;
        size_t n;
        st = list_dir(dir, &paths, &n);
        if (!st) {
            st = set_build(s, paths, n);
            free_list(paths, n);
        }
    }
    free(ipath);
    if (st) {
        lmx_st_set_close(s);
        return st;
    }
    *out = s;
    return LMX_OK;
}

size_t lmx_st_set_n_tensors(const lmx_st_set *s) { return s->n; }
size_t lmx_st_set_n_files(const lmx_st_set *s) { return s->n_files; }
bool lmx_st_set_has_index(const lmx_st_set *s) { return s->has_index; }

const lmx_st_file *lmx_st_set_file(const lmx_st_set *s, size_t i) {
    return i < s->n_files ? s->files[i] : NULL;
}

const lmx_st_tensor *lmx_st_set_tensor_at(const lmx_st_set *s, size_t i, const lmx_st_file **file) {
    if (i >= s->n) return NULL;
    const lmx_st_file *f = s->files[s->file_of[i]];
    if (file) *file = f;
    return lmx_st_tensor_at(f, s->local[i]);
}

const lmx_st_tensor *lmx_st_set_find(const lmx_st_set *s, const char *name, const lmx_st_file **file) {
    if (!name) return NULL;
    int64_t i = lmx_strmap_get(&s->index, name, strlen(name));
    return i < 0 ? NULL : lmx_st_set_tensor_at(s, (size_t)i, file);
}
