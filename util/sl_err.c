/*
 * sl_err.c — messages and names for the codes of sl_err.h, generated from the
 * same X-macro so that adding a code updates both at once.
 */
#include "sl_err.h"

const char *sl_strerror(int rc)
{
    switch (rc) {
    case SL_OK: return "success";
#define SL__ERR_MSG(name, code, msg) case code: return msg;
    SL_ERRNO_MAP(SL__ERR_MSG)
#undef SL__ERR_MSG
    default: return "unknown error";
    }
}

const char *sl_errname(int rc)
{
    switch (rc) {
    case SL_OK: return "SL_OK";
#define SL__ERR_NAME(name, code, msg) case code: return "SL_E" #name;
    SL_ERRNO_MAP(SL__ERR_NAME)
#undef SL__ERR_NAME
    default: return "SL_EUNKNOWN";
    }
}
