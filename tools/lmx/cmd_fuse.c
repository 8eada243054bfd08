/* cmd_fuse.c - `lmx fuse`: mlx_lm.fuse's flags and messages over the
 * library's fuse (src/convert/fuse.c). */
#include "cli.h"
#include "convert/fuse.h"

#include <stdio.h>
#include <string.h>

int cmd_fuse(int argc, char **argv) {
    const char *cmd = "fuse";
    cli_args a;
    cli_init(&a, argc, argv);
    lmx_fuse_options o;
    memset(&o, 0, sizeof o);
    o.model = "mlx_model";
    o.save_path = "fused_model";
    o.adapter_path = "adapters";
    o.gguf_path = "ggml-model-f16.gguf";
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx fuse [--model mlx_model] [--save-path fused_model] [--adapter-path adapters]\n"
                   "                [--dequantize] [--export-gguf] [--gguf-path ggml-model-f16.gguf]\n\n"
                   "Fuses LoRA/DoRA adapters (or full fine-tuned weights) into the model and writes an MLX\n"
                   "folder. A quantized model is re-quantized after fusing unless --dequantize. --export-gguf\n"
                   "also writes an f16 GGUF (llama/mistral) inside the save path.\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            o.model = cli_value(&a, f);
        } else if (!strcmp(f, "--save-path")) {
            o.save_path = cli_value(&a, f);
        } else if (!strcmp(f, "--adapter-path")) {
            o.adapter_path = cli_value(&a, f);
        } else if (!strcmp(f, "--dequantize")) {
            o.dequantize = true;
        } else if (!strcmp(f, "--export-gguf")) {
            o.export_gguf = true;
        } else if (!strcmp(f, "--gguf-path")) {
            o.gguf_path = cli_value(&a, f);
        } else if (!strcmp(f, "--upload-repo") || !strcmp(f, "--trust-remote-code")) {
            cli_fail(cmd, "%s is not supported (lmx does not reach the Hugging Face Hub)", f);
            return 2;
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    printf("Loading pretrained model\n");
    fflush(stdout);
    lmx_fuse_result r;
    if (lmx_fuse(&o, &r)) return cli_lib_fail(cmd);
    if (o.dequantize) printf("Dequantizing model\n");
    if (o.export_gguf) {
        printf("Converting to GGUF format\n");
        printf("Converted GGUF model saved as: %s/%s\n", o.save_path, o.gguf_path);
    }
    printf("Fused %d modules (%d tensors) into %s\n", r.n_modules, r.n_tensors, o.save_path);
    return 0;
}
