// Formatting and statistics shared by the commands' reports (bench tables, prep summaries).
#pragma once

#include <string>
#include <vector>

namespace cellfm::trainers {

/// `value` with `digits` decimals ("12.35").
std::string fixed(double value, int digits = 0);

/// The median of `values`: the middle one, the mean of the middle two for an even count, 0 when
/// there are none.
double median(std::vector<double> values);

}  // namespace cellfm::trainers
