/* Error codes to names and text, both generated from IOC_ERRNO_MAP in
 * iocore.h so the three can never disagree. */
#include "iocore.h"

const char *ioc_err_name(int code) {
  switch (code) {
#define IOC__ERR_NAME(name, value, text) \
  case IOC_##name:                        \
    return #name;
    IOC_ERRNO_MAP(IOC__ERR_NAME)
#undef IOC__ERR_NAME
  default:
    return "EUNKNOWN";
  }
}

const char *ioc_strerror(int code) {
  switch (code) {
#define IOC__ERR_TEXT(name, value, text) \
  case IOC_##name:                        \
    return text;
    IOC_ERRNO_MAP(IOC__ERR_TEXT)
#undef IOC__ERR_TEXT
  default:
    return "unknown error";
  }
}
