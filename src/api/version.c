/* version.c */
#include "lmx.h"

const char *lmx_version(void) { return LMX_VERSION; }
