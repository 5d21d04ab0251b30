// The implementation of memcg's C API (memcg/memcg.h), compiled once for the lwIP example.
#define MEMCG_C_IMPLEMENTATION
#include "memcg/memcg.h"
