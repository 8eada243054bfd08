/* cuda.h - the CUDA backend's C face. Without CUDA, stub.c implements it. */
#ifndef LMX_BACKEND_CUDA_H
#define LMX_BACKEND_CUDA_H

#include "core/backend.h"

lmx_status lmx_cuda_backend_create(lmx_backend **out);

#endif
