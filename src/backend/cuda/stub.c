/* stub.c - the CUDA backend when lmx is built without CUDA. */
#include "backend/cuda/cuda.h"

lmx_status lmx_cuda_backend_create(lmx_backend **out) {
    *out = NULL;
    return lmx_err(LMX_ERR_UNSUPPORTED, "device cuda: lmx was built without CUDA");
}
