/* Stub libnvinfer for importing NVIDIA's TensorRT Python bindings without TensorRT (tests/real_bindings.py):
   the entry points tensorrt.so links against; every factory returns null, so nothing can be built. */
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *l, int v) { (void)l; (void)v; return NULL; }
void *createInferRuntime_INTERNAL(void *l, int v) { (void)l; (void)v; return NULL; }
void *createInferRefitter_INTERNAL(void *e, void *l, int v) { (void)e; (void)l; (void)v; return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int t) { (void)t; return NULL; }
