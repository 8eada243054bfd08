/* cmd_convert.c - `lmx convert`: mlx_lm.convert's flags and messages over
 * the library's convert module (src/convert/). */
#include "cli.h"
#include "convert/convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void bar(uint64_t done, uint64_t total, void *user) {
    (void)user;
    int w = 40, k = total ? (int)(w * done / total) : w;
    fprintf(stderr, "\r[%.*s%*s] %3d%%", k, "########################################", w - k, "",
            total ? (int)(100 * done / total) : 100);
    if (done >= total) fprintf(stderr, "\n");
}

int cmd_convert(int argc, char **argv) {
    const char *cmd = "convert";
    cli_args a;
    cli_init(&a, argc, argv);
    lmx_convert_options o;
    lmx_convert_options_init(&o);
    o.dst = "mlx_model";
    long long bits = 0, group = 0;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx convert --hf-path SRC [--mlx-path mlx_model] [-q] [--q-bits N] [--q-group-size N]\n"
                   "                   [--q-mode affine|mxfp4|nvfp4|mxfp8] [--quant-predicate mixed_2_6|mixed_3_4|"
                   "mixed_3_6|mixed_4_6]\n                   [--dtype float16|bfloat16|float32] [-d]\n");
            return 0;
        } else if (!strcmp(f, "--hf-path") || !strcmp(f, "--model")) {
            o.src = cli_value(&a, f);
        } else if (!strcmp(f, "--mlx-path")) {
            o.dst = cli_value(&a, f);
        } else if (!strcmp(f, "-q") || !strcmp(f, "--quantize")) {
            o.quantize = true;
        } else if (!strcmp(f, "-d") || !strcmp(f, "--dequantize")) {
            o.dequantize = true;
        } else if (!strcmp(f, "--q-bits")) {
            cli_int(&a, f, 1, 16, &bits);
        } else if (!strcmp(f, "--q-group-size")) {
            cli_int(&a, f, 1, 4096, &group);
        } else if (!strcmp(f, "--q-mode")) {
            o.q_mode = cli_value(&a, f);
        } else if (!strcmp(f, "--quant-predicate")) {
            o.recipe = cli_value(&a, f);
        } else if (!strcmp(f, "--dtype")) {
            o.dtype = cli_value(&a, f);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!o.src) {
        cli_fail(cmd, "--hf-path is required");
        return 2;
    }
    o.q_bits = (int)bits;
    o.q_group = (int)group;
    if (isatty(2)) o.progress = bar;
    printf("[INFO] Loading\n");
    fflush(stdout);
    lmx_convert_result r;
    if (lmx_convert(&o, &r)) return cli_lib_fail(cmd);
    if (r.dtype) printf("[INFO] Using dtype: %s\n", r.dtype);
    if (o.quantize) {
        printf("[INFO] Quantizing\n");
        printf("[INFO] Quantized model with %.3f bits per weight.\n", r.bits_per_weight);
    }
    if (o.dequantize) printf("[INFO] Dequantizing\n");
    return 0;
}
