// The one main() of memcg_tests; every tests/*_test.cpp is linked into this executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
