// fuzz/replay_main.cpp: runs a libFuzzer target over files and directories without libFuzzer,
// so that every test build (g++, ASan, ...) replays the committed seed corpus and any crash
// reproducer: `replay DIR_OR_FILE...`. Exits non-zero only by the target's own abort.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {
int run_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  (void)LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  int runs = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // a stable order: a failure names the same file
      for (const auto& f : files) {
        std::fprintf(stderr, "replay %s\n", f.c_str());
        runs += run_file(f);
      }
    } else {
      runs += run_file(p);
    }
  }
  std::fprintf(stderr, "replay: %d inputs, no failure\n", runs);
  return runs > 0 ? 0 : 1;
}
