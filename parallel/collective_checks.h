// Argument checks every Communicator backend makes, with the same messages. Internal to parallel/.
#pragma once

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace cellfm::parallel {

/// UsageError unless `op` suits `dtype` (average needs a floating dtype). `what`: "allreduce".
void check_reduce_dtype(const char* what, torch::ScalarType dtype, ReduceOp op);

/// UsageError unless `whole` holds `ranks` parts shaped like `part`, of its dtype.
void check_gathered_parts(const torch::Tensor& whole, const torch::Tensor& part, int ranks,
                          const char* what);

}  // namespace cellfm::parallel
