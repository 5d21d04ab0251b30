#include <memcg/memcg.hpp>

int main() { return MEMCG_VERSION_MAJOR == 0 ? 0 : 1; }
