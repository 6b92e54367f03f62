/* Stub libcuda.so.1: no device. cuDriverGetVersion reports ATFR_STUB_CUDA_DRIVER (e.g. 12060). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
typedef int CUresult;
enum { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_NOT_INITIALIZED = 3, CUDA_ERROR_NO_DEVICE = 100,
       CUDA_ERROR_NOT_FOUND = 500 };
CUresult cuInit(unsigned int flags) { (void)flags; return CUDA_ERROR_NO_DEVICE; }
CUresult cuDriverGetVersion(int *v) {
  const char *s = getenv("ATFR_STUB_CUDA_DRIVER");
  if (!v) return CUDA_ERROR_INVALID_VALUE;
  *v = s ? atoi(s) : 12060;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int *n) { if (n) *n = 0; return CUDA_ERROR_NOT_INITIALIZED; }
CUresult cuGetErrorString(CUresult e, const char **s) { if (s) *s = e == CUDA_ERROR_NO_DEVICE ? "no CUDA-capable device is detected" : "stub error"; return CUDA_SUCCESS; }
CUresult cuGetErrorName(CUresult e, const char **s) { if (s) *s = e == CUDA_ERROR_NO_DEVICE ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN"; return CUDA_SUCCESS; }
static CUresult lookup(const char *sym, void **pfn) {
  static void *self;
  if (!pfn) return CUDA_ERROR_INVALID_VALUE;
  if (!self) self = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  *pfn = self ? dlsym(self, sym) : NULL;
  return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, unsigned long long flags) {
  (void)ver; (void)flags; return lookup(sym, pfn);
}
CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, unsigned long long flags, int *status) {
  (void)ver; (void)flags; CUresult r = lookup(sym, pfn); if (status) *status = r == CUDA_SUCCESS ? 0 : 1; return r;
}
