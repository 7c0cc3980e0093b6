// The rank grid: world = data-parallel x tensor-parallel, the ranks of one tensor-parallel group
// consecutive (one node), with a sub-communicator for each direction.
#pragma once

#include "parallel/comm.h"

namespace cellfm::parallel {

struct RankGrid {
  /// Splits `world` for `tensor_parallel` ranks per tensor-parallel group. Collective. Throws
  /// UsageError when tensor_parallel < 1 or does not divide world.size().
  static RankGrid create(const Comm& world, int tensor_parallel);

  Comm world;
  Comm data_parallel;    ///< the ranks holding the same tensor-parallel shard (same tp_rank)
  Comm tensor_parallel;  ///< the ranks sharing one model replica (consecutive world ranks)
  int dp_rank = 0;
  int dp_size = 1;
  int tp_rank = 0;
  int tp_size = 1;
};

}  // namespace cellfm::parallel
