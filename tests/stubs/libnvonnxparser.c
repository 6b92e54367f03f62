/* Stub libnvonnxparser (tests/real_bindings.py): no parser can be created. */
#include <stddef.h>
void *createNvOnnxParser_INTERNAL(void *n, void *l, int v) { (void)n; (void)l; (void)v; return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *r, void *l, int v) { (void)r; (void)l; (void)v; return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
