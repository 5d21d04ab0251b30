/* arch/cc.h for the lwIP example: a hosted build; lwIP's defaults cover the rest. */
#ifndef MEMCG_LWIP_ARCH_CC_H
#define MEMCG_LWIP_ARCH_CC_H
#include <stdio.h>
#include <stdlib.h>
#define LWIP_PLATFORM_ASSERT(x)                                                   \
  do {                                                                            \
    fprintf(stderr, "lwIP assertion \"%s\" failed at %s:%d\n", x, __FILE__, __LINE__); \
    abort();                                                                      \
  } while (0)
#define LWIP_RAND() ((u32_t)rand())
#endif
