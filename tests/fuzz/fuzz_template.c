/* fuzz_template.c - libFuzzer target: renders the input as a chat template over
 * a fixed small conversation, with tight memory/step caps. Any crash, leak or
 * sanitizer report is a bug; LMX_ERR_TEMPLATE is the expected failure.
 * Build: cmake -DLMX_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: ./fuzz_template -max_total_time=60 */
#include "chat/chat.h"

#include <stdint.h>
#include <stdlib.h>

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi \\u00e9\"},"
    " {\"role\": \"assistant\", \"content\": \"Hello\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"x\": 1.5}}}]},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part\"}]}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lmx_chat_limits lim = {.max_bytes = 16u << 20, .max_steps = 200000};
    char *out = NULL;
    if (lmx_chat_render_ex((const char *)data, size, VARS, &lim, &out) == LMX_OK) lmx_free(out);
    return 0;
}
