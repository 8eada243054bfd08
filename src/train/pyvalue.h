/*
 * pyvalue.h - a small typed value tree with Python's types (None, bool,
 * int, float, str, list, dict in insertion order), so that a training
 * configuration assembled from CLI flags, a YAML file and defaults keeps
 * the exact types mlx-lm's argparse namespace would hold, and can be
 * written as Python's json.dump(obj, f, indent=4) writes it (float repr,
 * ensure_ascii escapes, ", "/": " separators). Used by train_config*.c.
 */
#ifndef LMX_TRAIN_PYVALUE_H
#define LMX_TRAIN_PYVALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LMX_PY_NONE = 0, LMX_PY_BOOL, LMX_PY_INT, LMX_PY_FLOAT, LMX_PY_STR, LMX_PY_LIST, LMX_PY_DICT } lmx_py_type;

typedef struct lmx_pyval {
    lmx_py_type type;
    bool b;
    int64_t i;
    double f;
    char *s;                  /* STR: UTF-8 (invalid bytes kept, written as surrogate escapes) */
    int n, cap;               /* LIST / DICT entries */
    struct lmx_pyval **items; /* LIST items / DICT values */
    char **keys;              /* DICT keys */
} lmx_pyval;

/* Constructors return NULL when out of memory. */
lmx_pyval *lmx_py_none(void);
lmx_pyval *lmx_py_bool(bool b);
lmx_pyval *lmx_py_int(int64_t i);
lmx_pyval *lmx_py_float(double f);
lmx_pyval *lmx_py_str(const char *s);
lmx_pyval *lmx_py_list(void);
lmx_pyval *lmx_py_dict(void);
lmx_pyval *lmx_py_copy(const lmx_pyval *v);
void lmx_py_free(lmx_pyval *v);

/* Both take ownership of item/v (freed on failure). dict_set replaces an
 * existing key in place (a Python dict keeps the first insertion's position). */
bool lmx_py_list_append(lmx_pyval *l, lmx_pyval *item);
bool lmx_py_dict_set(lmx_pyval *d, const char *key, lmx_pyval *v);
lmx_pyval *lmx_py_dict_get(const lmx_pyval *d, const char *key); /* NULL when absent */
bool lmx_py_dict_del(lmx_pyval *d, const char *key);
/* args.get(key) is None: absent or None. */
bool lmx_py_is_none(const lmx_pyval *v);

const char *lmx_py_type_name(lmx_py_type t); /* "int", "NoneType", ... */
/* Python's repr(float): shortest round-trip digits, exponent form below
 * 1e-4 or from 1e16 ("1e-05", "20.0", "1e+16", "nan", "inf"). */
void lmx_py_float_repr(double f, char *buf, size_t cap);
/* json.dumps(v, indent=indent) (indent < 0: one line with ", " and ": ");
 * sort_top: the top-level dict's keys sorted (mlx-lm's save_config sorts
 * only the top level). Returns a malloc'ed string, NULL when out of memory. */
char *lmx_py_json_dumps(const lmx_pyval *v, int indent, bool sort_top);

#endif
