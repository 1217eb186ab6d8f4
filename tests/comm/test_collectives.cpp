// The CPU collectives and process groups of comm/process_group.h under a real mpirun (4 ranks, registered
// by tests/CMakeLists.txt): every collective's values on the world, on the TP and DP groups of a 2 x 2 grid,
// and the grid's layout. Each rank runs every test; a failure on any rank fails the job.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "comm/process_group.h"

namespace dape::comm {
namespace {

const ProcessGroup& world() {
  return Runtime::get().world();
}

TEST(Collectives, RunUnderMpirunWithFourRanks) {
  ASSERT_EQ(world().size(), 4) << "run this binary with mpirun -np 4";
  EXPECT_TRUE(Runtime::get().distributed());
}

TEST(Collectives, AllReduceSumsAndMaxes) {
  const int r = world().rank(), n = world().size();
  std::vector<float> f = {float(r), 1.0f, float(r * r)};
  world().all_reduce_sum(f.data(), f.size(), "test all_reduce float");
  EXPECT_EQ(f, (std::vector<float>{float(n * (n - 1) / 2), float(n), 14.0f}));  // 0 + 1 + 4 + 9
  double d[2] = {0.5 * r, -double(r)};
  world().all_reduce_sum(d, 2, "test all_reduce double");
  EXPECT_DOUBLE_EQ(d[0], 3.0);
  EXPECT_DOUBLE_EQ(d[1], -6.0);
  double m = r == 2 ? 7.0 : double(r);
  world().all_reduce_max(&m, 1, "test all_reduce max");
  EXPECT_DOUBLE_EQ(m, 7.0);
}

TEST(Collectives, ReduceScatterAllGatherAllToAllAndBroadcast) {
  const int r = world().rank(), n = world().size();
  const size_t k = 3;
  // in[s * k + e] = 100 r + 10 s + e on rank r.
  std::vector<float> in(n * k);
  for (int s = 0; s < n; ++s)
    for (size_t e = 0; e < k; ++e) in[s * k + e] = float(100 * r + 10 * s + int(e));
  std::vector<float> out(k);
  world().reduce_scatter_sum(out.data(), in.data(), k, "test reduce_scatter");
  for (size_t e = 0; e < k; ++e) EXPECT_EQ(out[e], float(100 * 6 + n * (10 * r + int(e))));  // sum of r = 6
  std::vector<float> gathered(n * k);
  world().all_gather(gathered.data(), in.data() + r * k, k, "test all_gather");
  for (int s = 0; s < n; ++s)
    for (size_t e = 0; e < k; ++e) EXPECT_EQ(gathered[s * k + e], float(100 * s + 10 * s + int(e)));
  std::vector<float> exchanged(n * k);
  world().all_to_all(exchanged.data(), in.data(), k, "test all_to_all");
  for (int s = 0; s < n; ++s)  // slice s comes from rank s: its slice r
    for (size_t e = 0; e < k; ++e) EXPECT_EQ(exchanged[s * k + e], float(100 * s + 10 * r + int(e)));
  uint64_t value = r == 1 ? 0xdadebeefull : 0;
  world().broadcast(&value, sizeof value, 1, "test broadcast");
  EXPECT_EQ(value, 0xdadebeefull);
  world().barrier("test barrier");
}

TEST(Collectives, GridPutsTensorParallelRanksNextToEachOther) {
  const Grid grid = Runtime::get().make_grid(2, 0);
  const int r = world().rank();
  EXPECT_EQ(grid.dp, 2);
  EXPECT_EQ(grid.tp_group.size(), 2);
  EXPECT_EQ(grid.dp_group.size(), 2);
  EXPECT_EQ(grid.tp_group.rank(), r % 2);
  EXPECT_EQ(grid.dp_group.rank(), r / 2);
  // The TP group of ranks {0,1} or {2,3}; the DP group of {0,2} or {1,3}: sums of world ranks tell.
  float tp_sum = float(r), dp_sum = float(r);
  grid.tp_group.all_reduce_sum(&tp_sum, 1, "test tp group");
  grid.dp_group.all_reduce_sum(&dp_sum, 1, "test dp group");
  EXPECT_EQ(tp_sum, r < 2 ? 1.0f : 5.0f);
  EXPECT_EQ(dp_sum, r % 2 == 0 ? 2.0f : 4.0f);
  EXPECT_THROW(Runtime::get().make_grid(3, 0), std::invalid_argument);
  EXPECT_THROW(Runtime::get().make_grid(1, 3), std::invalid_argument);
}

}  // namespace
}  // namespace dape::comm

int main(int argc, char** argv) {
  dape::comm::Runtime::get();  // MPI first: mpirun started this process
  ::testing::InitGoogleTest(&argc, argv);
  // Only rank 0 prints the test log; every rank's failures still fail its exit code.
  if (dape::comm::Runtime::get().world().rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  return RUN_ALL_TESTS();
}
