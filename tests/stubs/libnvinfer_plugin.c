/* Stub libnvinfer_plugin (tests/real_bindings.py): plugin initialisation always fails. */
#include <stdbool.h>
bool initLibNvInferPlugins(void *l, const char *ns) { (void)l; (void)ns; return false; }
