/* error.c - the thread-local last-error message behind lmx_last_error(). */
#include "base.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char err_msg[1024];

lmx_status lmx_err(lmx_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return s;
}

lmx_status lmx_err_prefix(lmx_status s, const char *fmt, ...) {
    char prefix[512], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err_msg - 3) n = sizeof err_msg - 3;
    memcpy(err_msg, prefix, n);
    memcpy(err_msg + n, ": ", 2);
    size_t rest = sizeof err_msg - n - 3;
    size_t k = strnlen(old, rest);
    memcpy(err_msg + n + 2, old, k);
    err_msg[n + 2 + k] = 0;
    return s;
}

void lmx_err_clear(void) { err_msg[0] = 0; }

const char *lmx_last_error(void) { return err_msg[0] ? err_msg : "no error"; }

const char *lmx_status_str(lmx_status s) {
    switch (s) {
    case LMX_OK: return "ok";
    case LMX_ERR_INVALID_ARG: return "invalid argument";
    case LMX_ERR_IO: return "I/O error";
    case LMX_ERR_FORMAT: return "format error";
    case LMX_ERR_UNSUPPORTED: return "unsupported";
    case LMX_ERR_NOMEM: return "out of memory";
    case LMX_ERR_NOT_FOUND: return "not found";
    case LMX_ERR_SHAPE: return "shape mismatch";
    case LMX_ERR_TEMPLATE: return "template error";
    case LMX_ERR_ABORTED: return "aborted";
    case LMX_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
