// comm: how work is split across processes. This header owns the size-splitting helper and the plain shard
// descriptor that the model exports and checkpoint consumes (standard library only); process_group.h owns
// the processes themselves: MPI start-up, process groups on the TP x DP grid and the CPU collectives.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dape::comm {

// One rank's piece of a logical (unsharded) tensor: its name, global shape, the offset of this
// rank's slab in each dimension, the slab's shape, and the replica index (only replica 0 writes).
struct ShardDescriptor {
  std::string name;
  std::vector<int64_t> global_shape;
  std::vector<int64_t> offset;
  std::vector<int64_t> local_shape;
  int replica = 0;
};

// numerator / denominator, or a dape::ConfigError-style std::invalid_argument naming both numbers and
// what they are when it does not divide.
int64_t divide_exact(int64_t numerator, int64_t denominator, const std::string& what);

}  // namespace dape::comm
