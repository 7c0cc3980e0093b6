// The shared argument checks of the communicator backends.
#include "parallel/collective_checks.h"

#include <string>

#include "core/error.h"

namespace cellfm::parallel {

void check_reduce_dtype(const char* what, torch::ScalarType dtype, ReduceOp op) {
  if (op == ReduceOp::average && !torch::isFloatingType(dtype)) {
    throw core::UsageError(std::string(what) + " average needs a floating dtype, got " +
                           c10::toString(dtype));
  }
}

void check_gathered_parts(const torch::Tensor& whole, const torch::Tensor& part, int ranks,
                          const char* what) {
  if (whole.numel() != part.numel() * ranks || whole.scalar_type() != part.scalar_type()) {
    throw core::UsageError(std::string(what) + ": the gathered tensor must hold " +
                           std::to_string(ranks) + " x " + std::to_string(part.numel()) +
                           " elements of the part's dtype, got " + std::to_string(whole.numel()) +
                           " " + c10::toString(whole.scalar_type()));
  }
}

}  // namespace cellfm::parallel
