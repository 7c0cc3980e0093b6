// The sampler's epoch plan: block order, per-rank windows, the tail pool, and the replay of the
// epoch's dp history that a change of dp size needs.
#include "data/sampler.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::data {
namespace {

using std::int64_t;

constexpr std::uint64_t kBlockOrderTag = 0x426C6F636B4F7264ULL;  // "BlockOrd"
constexpr std::uint64_t kWindowTag = 0x57696E646F774F72ULL;      // "WindowOr"
constexpr int64_t kMaxProduct = int64_t{1} << 40;

// The cells of `blocks` consecutive positions from `first_position`, visited in the order of a
// keyed permutation of [0, cells): index j of the permutation's image is cell j % B of the block
// at position first_position + j / B (only the last position of the epoch can be short, and it
// is last in any source that holds it, so j / B is right).
struct Source {
  int64_t first_position = 0;
  int64_t blocks = 0;
  int64_t cells = 0;
  std::uint64_t key = 0;
};

// Steps [begin, end) of a source's visiting order.
struct Run {
  Source source;
  int64_t begin = 0;
  int64_t end = 0;
};

// A sequence of cells described as consecutive runs; O(dp_size) entries, never O(cells).
using Runs = std::vector<Run>;

int64_t length(const Runs& runs) {
  int64_t total = 0;
  for (const Run& run : runs) total += run.end - run.begin;
  return total;
}

// Cells [lo, hi) of the concatenation of `runs`, appended to `out`.
void append_slice(const Runs& runs, int64_t lo, int64_t hi, Runs& out) {
  int64_t offset = 0;
  for (const Run& run : runs) {
    const int64_t size = run.end - run.begin;
    const int64_t from = std::max(lo, offset);
    const int64_t to = std::min(hi, offset + size);
    if (from < to) {
      out.push_back({run.source, run.begin + (from - offset), run.begin + (to - offset)});
    }
    offset += size;
    if (offset >= hi) break;
  }
}

Runs slice(const Runs& runs, int64_t lo, int64_t hi) {
  Runs out;
  append_slice(runs, lo, hi, out);
  return out;
}

// What is fixed for the epoch: sizes, options and the block order.
struct Geometry {
  int64_t cells;          // N
  int64_t block_cells;    // B
  int64_t window_blocks;  // K
  int64_t batch;          // b
  int64_t full_blocks;    // blocks of exactly B cells
  int64_t blocks;         // full_blocks plus the short block, if any
  std::uint64_t seed;
  std::uint64_t epoch;
  KeyedPermutation block_order;

  int64_t window_cells() const { return window_blocks * block_cells; }

  // The block id at a position of the epoch's block order.
  int64_t block_at(int64_t position) const {
    return position < full_blocks ? static_cast<int64_t>(block_order(position)) : full_blocks;
  }

  Source source(int64_t first_position, int64_t count) const {
    int64_t size = count * block_cells;
    if (first_position + count == blocks && blocks > full_blocks) {
      size -= blocks * block_cells - cells;  // the short block
    }
    return {first_position, count, size,
            derive_key({seed, epoch, kWindowTag, static_cast<std::uint64_t>(first_position),
                        static_cast<std::uint64_t>(count)})};
  }

  // Calls emit(ordinal) for each cell of `runs`, in order.
  template <typename Emit>
  void for_each_cell(const Runs& runs, Emit&& emit) const {
    for (const Run& run : runs) {
      const KeyedPermutation order(static_cast<std::uint64_t>(run.source.cells), run.source.key);
      for (int64_t i = run.begin; i < run.end; ++i) {
        const auto j = static_cast<int64_t>(order(static_cast<std::uint64_t>(i)));
        emit(block_at(run.source.first_position + j / block_cells) * block_cells + j % block_cells);
      }
    }
  }
};

// A stretch of the epoch run with one dp size, from a step boundary on. Each rank's stream is:
// its share of `carry`, then its `windows` windows, then its part of the `tail` pool; see
// sampler.h for the rules.
struct Segment {
  int64_t start_cells = 0;  // cells consumed globally when the segment starts
  int64_t start_step = 0;   // steps of the epoch before the segment
  int64_t dp = 1;
  Runs carry;                   // cells left over by the previous segment; rank r takes share
  int64_t share = 0;            //   cells [r*share, (r+1)*share) of it
  int64_t first_untouched = 0;  // positions from here on are in no earlier segment's windows
  int64_t windows = 0;          // full windows per rank
  int64_t regular_steps = 0;    // steps before the first one that needs the tail pool
  int64_t leftover = 0;         // cells of each rank's own stream left after regular_steps
  Runs deferred;                // carried cells that did not divide evenly; go to the tail pool
  Runs tail;                    // the tail pool: deferred, then the remaining blocks in windows
  int64_t tail_steps = 0;
  int64_t last_step_cells = 0;  // cells handed out at the segment's last step (if tail_steps > 0)

  int64_t steps() const { return regular_steps + tail_steps; }
  int64_t group_blocks(const Geometry& geo) const { return geo.window_blocks * dp; }
  // Cells of carry and windows in each rank's stream.
  int64_t own_cells(const Geometry& geo) const { return share + windows * geo.window_cells(); }

  Source window(const Geometry& geo, int64_t rank, int64_t w) const {
    return geo.source(first_untouched + w * group_blocks(geo) + rank * geo.window_blocks,
                      geo.window_blocks);
  }

  // Cells rank `rank` gets in the tail steps (its leftover included).
  int64_t tail_total(const Geometry& geo, int64_t rank) const {
    if (tail_steps == 0) return 0;
    return (tail_steps - 1) * geo.batch + last_step_cells / dp +
           (rank < last_step_cells % dp ? 1 : 0);
  }

  // The rank's contiguous share of the tail pool.
  Runs tail_part(const Geometry& geo, int64_t rank) const {
    if (tail_steps == 0) return {};
    const int64_t before = rank * ((tail_steps - 1) * geo.batch - leftover) +
                           rank * (last_step_cells / dp) + std::min(rank, last_step_cells % dp);
    return slice(tail, before, before + tail_total(geo, rank) - leftover);
  }

  int64_t stream_length(const Geometry& geo, int64_t rank) const {
    return regular_steps * geo.batch + tail_total(geo, rank);
  }

  // Cells [lo, hi) of the rank's stream.
  Runs stream_slice(const Geometry& geo, int64_t rank, int64_t lo, int64_t hi) const {
    Runs out;
    if (lo < share) append_slice(carry, rank * share + lo, rank * share + std::min(hi, share), out);
    const int64_t own = own_cells(geo);
    for (int64_t at = std::max(lo, share); at < std::min(hi, own);) {
      const int64_t w = (at - share) / geo.window_cells();
      const int64_t window_start = share + w * geo.window_cells();
      const int64_t end = std::min(hi, window_start + geo.window_cells());
      out.push_back({window(geo, rank, w), at - window_start, end - window_start});
      at = end;
    }
    if (hi > own) append_slice(tail_part(geo, rank), std::max(lo, own) - own, hi - own, out);
    return out;
  }
};

Segment make_segment(const Geometry& geo, int64_t start_cells, int64_t start_step, int64_t dp,
                     Runs carry, int64_t first_untouched, Runs deferred) {
  Segment seg;
  seg.start_cells = start_cells;
  seg.start_step = start_step;
  seg.dp = dp;
  const int64_t carried = length(carry);
  seg.share = carried / dp;
  append_slice(carry, dp * seg.share, carried, deferred);
  seg.carry = std::move(carry);
  seg.deferred = std::move(deferred);
  seg.first_untouched = first_untouched;
  const int64_t group = seg.group_blocks(geo);
  seg.windows = std::max<int64_t>(0, geo.full_blocks - first_untouched) / group;
  const int64_t own = seg.own_cells(geo);
  seg.regular_steps = own / geo.batch;
  seg.leftover = own % geo.batch;
  // The tail pool: deferred cells first, then the blocks no window took, K at a time (so a
  // rank's contiguous share touches few of them).
  seg.tail = seg.deferred;
  for (int64_t position = first_untouched + seg.windows * group; position < geo.blocks;
       position += geo.window_blocks) {
    const Source source = geo.source(position, std::min(geo.window_blocks, geo.blocks - position));
    seg.tail.push_back({source, 0, source.cells});
  }
  const int64_t pooled = dp * seg.leftover + length(seg.tail);
  CELLFM_CHECK(dp * seg.regular_steps * geo.batch + pooled == geo.cells - start_cells,
               "sampler segment does not account for every remaining cell");
  const int64_t step_cells = dp * geo.batch;
  seg.tail_steps = (pooled + step_cells - 1) / step_cells;
  seg.last_step_cells = seg.tail_steps > 0 ? pooled - (seg.tail_steps - 1) * step_cells : 0;
  return seg;
}

// The segment that continues `seg` after `steps` of its steps (0 < steps < seg.steps()) with
// `dp` ranks: what the ranks have not consumed of their current windows (or of the carry, or of
// the tail pool) is carried over; untouched positions stay untouched.
Segment continue_segment(const Geometry& geo, const Segment& seg, int64_t steps, int64_t dp) {
  const int64_t consumed = steps * geo.batch;  // of each rank's stream
  Runs carry;
  int64_t first_untouched = geo.blocks;
  Runs deferred;
  if (steps <= seg.regular_steps) {
    first_untouched = seg.first_untouched;
    if (consumed < seg.share) {
      for (int64_t r = 0; r < seg.dp; ++r) {
        append_slice(seg.carry, r * seg.share + consumed, (r + 1) * seg.share, carry);
      }
    } else {
      const int64_t w = (consumed - seg.share) / geo.window_cells();
      const int64_t used = (consumed - seg.share) % geo.window_cells();
      if (used > 0) {
        for (int64_t r = 0; r < seg.dp; ++r) {
          carry.push_back({seg.window(geo, r, w), used, geo.window_cells()});
        }
      }
      first_untouched += (w + (used > 0 ? 1 : 0)) * seg.group_blocks(geo);
    }
    deferred = seg.deferred;
  } else {
    // Inside the tail: every rank's carry and windows are used up.
    const int64_t own = seg.own_cells(geo);
    for (int64_t r = 0; r < seg.dp; ++r) {
      const Runs part = seg.tail_part(geo, r);
      append_slice(part, consumed - own, length(part), carry);
    }
  }
  return make_segment(geo, seg.start_cells + steps * seg.dp * geo.batch, seg.start_step + steps, dp,
                      std::move(carry), first_untouched, std::move(deferred));
}

void check_option(bool ok, const std::string& message) {
  if (!ok) throw core::UsageError("sampler: " + message);
}

[[noreturn]] void bad_state(const std::string& message) {
  throw core::InputError("sampler state: " + message);
}

std::string str(int64_t value) {
  return std::to_string(value);
}

}  // namespace

struct EpochSampler::Impl {
  Geometry geo;
  int64_t rank;
  std::vector<DpSegment> history;
  Segment seg;  // the current (last) segment
  int64_t first_step;

  int64_t check_step(int64_t step, int64_t last, const char* what) const {
    CELLFM_CHECK(step >= first_step && step <= last, std::string("EpochSampler::") + what +
                                                         ": step " + str(step) + " is outside " +
                                                         str(first_step) + ".." + str(last));
    return step - seg.start_step;
  }

  int64_t steps_per_epoch() const { return seg.start_step + seg.steps(); }
};

EpochSampler::EpochSampler(int64_t total_cells, const SamplerOptions& options, int64_t dp_rank,
                           int64_t dp_size, const SamplerState& state) {
  check_option(total_cells >= 1, "the corpus has no kept cells");
  check_option(options.block_cells >= 1, "block_cells must be at least 1");
  check_option(options.shuffle_blocks >= 1, "shuffle_blocks must be at least 1");
  check_option(options.batch_cells >= 1, "batch_cells must be at least 1");
  check_option(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
               "data-parallel rank " + str(dp_rank) + " is not in 0.." + str(dp_size - 1));
  check_option(options.block_cells <= kMaxProduct / options.shuffle_blocks,
               "block_cells * shuffle_blocks must be below 2^40");
  check_option(options.batch_cells <= kMaxProduct / dp_size,
               "batch_cells * data-parallel size must be below 2^40");

  const int64_t full_blocks = total_cells / options.block_cells;
  const int64_t blocks = (total_cells + options.block_cells - 1) / options.block_cells;
  Geometry geo{total_cells,
               options.block_cells,
               options.shuffle_blocks,
               options.batch_cells,
               full_blocks,
               blocks,
               options.seed,
               state.epoch,
               KeyedPermutation(static_cast<std::uint64_t>(full_blocks),
                                derive_key({options.seed, state.epoch, kBlockOrderTag}))};

  // Validate the state and append this sampler's dp size to the history.
  const int64_t consumed = state.cells_consumed;
  if (consumed < 0 || consumed >= total_cells) {
    bad_state("cells_consumed " + str(consumed) + " is outside the epoch's 0.." +
              str(total_cells - 1));
  }
  std::vector<DpSegment> history = state.dp_history;
  if (history.empty() && consumed != 0) {
    bad_state("cells_consumed is " + str(consumed) + " but the dp history is empty");
  }
  for (std::size_t k = 0; k < history.size(); ++k) {
    const DpSegment& entry = history[k];
    if (entry.dp_size < 1) bad_state("dp history has dp size " + str(entry.dp_size));
    if (k == 0 && entry.start_cells != 0) bad_state("dp history does not start at 0 cells");
    if (k > 0 && (entry.start_cells <= history[k - 1].start_cells ||
                  entry.dp_size == history[k - 1].dp_size)) {
      bad_state("dp history entry " + str(static_cast<int64_t>(k)) +
                " does not change the dp size after the previous one");
    }
    if (entry.start_cells > consumed) {
      bad_state("dp history entry at " + str(entry.start_cells) +
                " cells lies after cells_consumed " + str(consumed));
    }
  }
  if (!history.empty() && history.back().dp_size != dp_size &&
      history.back().start_cells == consumed) {
    history.pop_back();  // that dp size ran no step; the change replaces it
  }
  if (history.empty() || history.back().dp_size != dp_size) history.push_back({consumed, dp_size});

  // Replay the history: each change continues from the previous segment's state at that point.
  Segment seg = make_segment(geo, 0, 0, history[0].dp_size, {}, 0, {});
  auto steps_to = [&](int64_t cells) {
    const int64_t step_cells = seg.dp * geo.batch;
    if ((cells - seg.start_cells) % step_cells != 0) {
      bad_state(str(cells) + " cells consumed is not a step boundary of dp size " + str(seg.dp) +
                " with batch_cells " + str(geo.batch) + " from " + str(seg.start_cells) +
                " cells on");
    }
    return (cells - seg.start_cells) / step_cells;
  };
  for (std::size_t k = 1; k < history.size(); ++k) {
    seg = continue_segment(geo, seg, steps_to(history[k].start_cells), history[k].dp_size);
  }
  const int64_t first_step = seg.start_step + steps_to(consumed);
  impl_ = std::make_shared<const Impl>(
      Impl{std::move(geo), dp_rank, std::move(history), std::move(seg), first_step});
}

std::uint64_t EpochSampler::epoch() const {
  return impl_->geo.epoch;
}
int64_t EpochSampler::first_step() const {
  return impl_->first_step;
}
int64_t EpochSampler::steps_per_epoch() const {
  return impl_->steps_per_epoch();
}

int64_t EpochSampler::batch_size(int64_t step) const {
  const Impl& im = *impl_;
  const int64_t t = im.check_step(step, im.steps_per_epoch() - 1, "batch_size");
  const int64_t lo = t * im.geo.batch;
  return std::min(lo + im.geo.batch, im.seg.stream_length(im.geo, im.rank)) - lo;
}

std::vector<int64_t> EpochSampler::batch(int64_t step) const {
  const Impl& im = *impl_;
  const int64_t t = im.check_step(step, im.steps_per_epoch() - 1, "batch");
  const int64_t lo = t * im.geo.batch;
  const int64_t hi = std::min(lo + im.geo.batch, im.seg.stream_length(im.geo, im.rank));
  std::vector<int64_t> cells;
  cells.reserve(static_cast<std::size_t>(hi - lo));
  im.geo.for_each_cell(im.seg.stream_slice(im.geo, im.rank, lo, hi),
                       [&](int64_t cell) { cells.push_back(cell); });
  return cells;
}

std::vector<CellRange> EpochSampler::read_ranges(int64_t step_begin, int64_t step_end) const {
  const Impl& im = *impl_;
  const Geometry& geo = im.geo;
  const int64_t t0 = im.check_step(step_begin, im.steps_per_epoch(), "read_ranges");
  const int64_t t1 = im.check_step(step_end, im.steps_per_epoch(), "read_ranges");
  CELLFM_CHECK(t0 <= t1, "EpochSampler::read_ranges: step_begin is after step_end");
  const int64_t length = im.seg.stream_length(geo, im.rank);
  const int64_t lo = std::min(t0 * geo.batch, length);
  const int64_t hi = std::min(t1 * geo.batch, length);
  std::vector<int64_t> blocks;
  for (const Run& run : im.seg.stream_slice(geo, im.rank, lo, hi)) {
    if (run.begin == 0 && run.end == run.source.cells) {  // a whole source: all its blocks
      for (int64_t p = 0; p < run.source.blocks; ++p) {
        blocks.push_back(geo.block_at(run.source.first_position + p));
      }
    } else {
      geo.for_each_cell({run}, [&](int64_t cell) { blocks.push_back(cell / geo.block_cells); });
    }
  }
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  std::vector<CellRange> ranges;
  for (const int64_t block : blocks) {
    const int64_t begin = block * geo.block_cells;
    const int64_t end = std::min(begin + geo.block_cells, geo.cells);
    if (!ranges.empty() && ranges.back().end == begin) {
      ranges.back().end = end;
    } else {
      ranges.push_back({begin, end});
    }
  }
  return ranges;
}

int64_t EpochSampler::cells_consumed_after(int64_t step) const {
  const Impl& im = *impl_;
  const int64_t t = im.check_step(step, im.steps_per_epoch(), "cells_consumed_after");
  return im.seg.start_cells +
         std::min(t * im.seg.dp * im.geo.batch, im.geo.cells - im.seg.start_cells);
}

SamplerState EpochSampler::state_after(int64_t step) const {
  const Impl& im = *impl_;
  im.check_step(step, im.steps_per_epoch(), "state_after");
  if (step == im.steps_per_epoch()) return {im.geo.epoch + 1, 0, {{0, im.seg.dp}}};
  return {im.geo.epoch, cells_consumed_after(step), im.history};
}

CellSampler::CellSampler(int64_t total_cells, const SamplerOptions& options, int64_t dp_rank,
                         int64_t dp_size, const SamplerState& state)
    : total_cells_(total_cells),
      options_(options),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      epoch_(total_cells, options, dp_rank, dp_size, state),
      step_(epoch_.first_step()),
      state_(epoch_.state_after(step_)) {}

SampledBatch CellSampler::next() {
  SampledBatch out{epoch_.epoch(), step_, epoch_.batch(step_)};
  ++step_;
  state_ = epoch_.state_after(step_);
  if (step_ == epoch_.steps_per_epoch()) {
    epoch_ = EpochSampler(total_cells_, options_, dp_rank_, dp_size_, state_);
    step_ = 0;
  }
  return out;
}

}  // namespace cellfm::data
