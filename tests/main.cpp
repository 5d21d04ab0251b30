// The one main() of the test executables; every tests/*_test.cpp is linked into one of them.
//
// With per-CPU stocks a test thread that migrates between two charges finds another CPU's stock:
// a correct miss, but not the one a test that counts pages expects. So every test case outside
// the "concurrency" suite runs with its thread pinned to one CPU (threads it starts inherit the
// pin unless they pin themselves: memcg_test::cpu_pin), and the mask is given back after it.
// Concurrency tests run unpinned, migrations included.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sched.h>

#include <cstring>

#include "support.hpp"

namespace {

struct cpu_pin_listener : doctest::IReporter {
  explicit cpu_pin_listener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData& tc) override {
    const cpu_set_t& all = memcg_test::process_cpus();
    if (std::strcmp(tc.m_test_suite, "concurrency") == 0) {
      (void)sched_setaffinity(0, sizeof all, &all);
      return;
    }
    int cpu = memcg_test::allowed_cpu(0);
    if (cpu < 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    (void)sched_setaffinity(0, sizeof one, &one);  // best effort: a failure only adds noise
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {
    const cpu_set_t& all = memcg_test::process_cpus();
    (void)sched_setaffinity(0, sizeof all, &all);
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("cpu_pin", 1, cpu_pin_listener);
