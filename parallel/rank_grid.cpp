// RankGrid: world rank r is tensor-parallel rank r % tp of data-parallel rank r / tp.
#include "parallel/rank_grid.h"

#include <string>

#include "core/error.h"

namespace cellfm::parallel {

RankGrid RankGrid::create(const Comm& world, int tensor_parallel) {
  const int size = world.size();
  if (tensor_parallel < 1 || size % tensor_parallel != 0) {
    throw core::UsageError("parallel.tensor_parallel = " + std::to_string(tensor_parallel) +
                           " must be at least 1 and divide the " + std::to_string(size) +
                           " ranks of the job");
  }
  const int rank = world.rank();
  RankGrid grid{world, world.split(rank % tensor_parallel, rank),
                world.split(rank / tensor_parallel, rank)};
  grid.tp_size = tensor_parallel;
  grid.tp_rank = rank % tensor_parallel;
  grid.dp_size = size / tensor_parallel;
  grid.dp_rank = rank / tensor_parallel;
  return grid;
}

}  // namespace cellfm::parallel
