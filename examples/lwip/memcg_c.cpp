// libmemcg-c's implementation (src/memcg_c.cpp), compiled into the lwIP example, which is built
// from memcg's source tree without installing it.
#include "../../src/memcg_c.cpp"
